"""heartbeat.validate and the builders (StarlingX v3 shapes and limits)."""
from __future__ import annotations

import pytest

from nfvha.protocol import heartbeat as hb
from nfvha.protocol.framing import LineDecoder, encode


def _all_built() -> list:
    return [
        hb.build_init(sequence=1, invocation_id=5, name="vm", heartbeat_interval_ms=250,
                      corrective_action="reboot"),
        hb.build_init_ack(sequence=1, invocation_id=5),
        hb.build_challenge(sequence=2, heartbeat_challenge=2**31 - 1),
        hb.build_challenge_response(sequence=2, heartbeat_response=1, heartbeat_health="healthy",
                                    corrective_action="none"),
        hb.build_exit(sequence=3),
        hb.build_action_notify(sequence=4, invocation_id=7, event_type="reboot",
                               notification_type="revocable", timeout_ms=3000),
        hb.build_action_response(sequence=4, invocation_id=7, event_type="reboot",
                                 notification_type="revocable", vote_result="accept"),
        hb.build_nack(sequence=5, invocation_id=0, log_msg="no"),
    ]


def test_every_builder_output_validates_and_fits_max_msg() -> None:
    built = _all_built()
    assert sorted(m["msg_type"] for m in built) == sorted(hb.MSG_TYPES)
    for msg in built:
        assert hb.validate(msg) is None, msg
        assert len(encode(msg)) <= hb.MAX_MSG


def test_builders_cut_free_text_to_the_byte_limits_on_a_char_boundary() -> None:
    msg = hb.build_challenge_response(sequence=1, heartbeat_response=1,
                                      heartbeat_health="unhealthy", corrective_action="reboot",
                                      log_msg="\u00e9" * 500)
    assert len(msg["log_msg"].encode()) <= hb.LOG_MSG_MAX
    assert hb.validate(msg) is None
    init = hb.build_init(sequence=1, invocation_id=1, name="n" * 100, heartbeat_interval_ms=1,
                         corrective_action="log")
    assert len(init["name"]) == hb.NAME_MAX


def test_starlingx_transcript_messages_validate() -> None:
    d = LineDecoder()
    raw = (b'{"version":3,"revision":1,"msg_type":"init","sequence":1,"invocation_id":1804289383,'
           b'"name":"cgcs.heartbeat","heartbeat_interval_ms":400,"vote_secs":9,'
           b'"shutdown_notice_secs":9,"suspend_notice_secs":9,"resume_notice_secs":14,'
           b'"restart_secs":601,"corrective_action":"reboot"}\n')
    (msg,) = d.feed(raw)
    assert hb.validate(msg) is None


def _response(**over: object) -> dict:
    msg = hb.build_challenge_response(sequence=1, heartbeat_response=1,
                                      heartbeat_health="healthy", corrective_action="none")
    msg.update(over)
    return msg


@pytest.mark.parametrize(
    "msg, fragment",
    [
        ({"msg_type": "challenge_response"}, "version"),
        (_response(version=2), "version"),
        (_response(version="3"), "version"),
        (_response(version=True), "version"),
        (_response(msg_type="bogus"), "msg_type"),
        (_response(msg_type=None), "msg_type"),
        (_response(msg_type=["init"]), "msg_type"),
        (_response(heartbeat_response="1"), "heartbeat_response"),
        (_response(heartbeat_response=True), "heartbeat_response"),
        (_response(heartbeat_response=-1), "heartbeat_response"),
        (_response(heartbeat_response=2**32), "heartbeat_response"),
        (_response(heartbeat_response=1.0), "heartbeat_response"),
        (_response(heartbeat_health="fine"), "heartbeat_health"),
        (_response(corrective_action="explode"), "corrective_action"),
        (_response(log_msg="x" * 225), "log_msg"),
        (_response(log_msg="\ud800"), "log_msg"),
        (_response(log_msg=None), "log_msg"),
        ({k: v for k, v in _response().items() if k != "sequence"}, "sequence"),
    ],
)
def test_validate_rejects_with_a_reason(msg: dict, fragment: str) -> None:
    error = hb.validate(msg)
    assert error is not None and fragment in error


def test_validate_tolerates_unknown_extra_fields_and_any_revision() -> None:
    assert hb.validate(_response(extra={"x": 1}, revision=2)) is None


def test_validate_never_raises_on_odd_inputs() -> None:
    for odd in ([], "x", None, 5, {"msg_type": {}}, {"msg_type": "init", "version": 3}):
        assert isinstance(hb.validate(odd), str)  # type: ignore[arg-type]


def test_init_name_limit_is_64_bytes() -> None:
    init = _all_built()[0]
    init["name"] = "n" * 64
    assert hb.validate(init) is None
    init["name"] = "n" * 65
    assert "name" in (hb.validate(init) or "")
