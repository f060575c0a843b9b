"""validate() takes a shortcut for the message every guest sends every
interval (a well-formed challenge_response). Whatever the message, its
answer must be the field-by-field check's, word for word."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nfvha.protocol import heartbeat as hb

VALID = hb.build_challenge_response(sequence=7, heartbeat_response=12345,
                                    heartbeat_health="healthy", corrective_action="reboot")
EDGES = [None, True, False, 0, 2, 3, hb.VERSION, hb.UINT32_MAX, hb.UINT32_MAX + 1, 2**64, -1,
         3.0, "3", [3], {"a": 1}, "healthy", "unhealthy", "Healthy", "reboot", "none", "stop",
         "log", "unknown", "", "x" * hb.LOG_MSG_MAX, "x" * (hb.LOG_MSG_MAX + 1), "é" * 112,
         "é" * 113, "\ud800", "challenge_response", "init"]
odd_values = st.one_of(st.none(), st.booleans(), st.integers(min_value=-3, max_value=2**32 + 3),
                       st.text(max_size=5), st.sampled_from(EDGES))


def test_every_field_set_to_every_edge_value_is_judged_alike() -> None:
    for key in [*sorted(VALID), "extra"]:
        for value in EDGES:
            msg = {**VALID, key: value}
            assert hb.validate(msg) == hb._validate(msg), (key, value)
        msg = dict(VALID)
        msg.pop(key, None)
        assert hb.validate(msg) == hb._validate(msg), key


@settings(max_examples=2000, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(VALID) + ["extra"]), odd_values,
                               max_size=3),
       drop=st.lists(st.sampled_from(sorted(VALID)), max_size=2))
def test_validate_answers_as_the_field_by_field_check(changes: dict, drop: list) -> None:
    msg = {**VALID, **changes}
    for key in drop:
        msg.pop(key, None)
    assert hb.validate(msg) == hb._validate(msg)


def test_the_shortcut_accepts_the_usual_answer_and_refuses_nothing_by_itself() -> None:
    assert hb._is_valid_response(VALID) and hb.validate(VALID) is None
    bad = {**VALID, "heartbeat_response": True}  # JSON true is not a number
    assert not hb._is_valid_response(bad)
    assert hb.validate(bad) == "challenge_response: heartbeat_response must be an integer"
