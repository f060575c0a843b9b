"""The C steady path (compute/_steady.c via compute/steady.py) against the
Python host machine: for any steady state, any time and any bytes, it either
declines (None, nothing changed) or does exactly what host.step does — the
same challenge bytes, the same round trip, the same next state, the same
deadline. And it must not decline what every guest sends."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from conftest import answer_msg, missing, steady_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfvha.compute import codec, steady
from nfvha.protocol import heartbeat as hb
from nfvha.protocol import host
from nfvha.protocol._state import evolve
from nfvha.protocol.framing import FrameError, encode


@pytest.fixture(autouse=True)
def _built() -> None:
    if not steady.AVAILABLE:
        missing("the C steady path is not built (pip install -e . with a C compiler)")


def assert_tick_agrees(state: host.HostState, now: float) -> tuple[host.HostState, object]:
    fast = steady.enter(state)
    got = fast.tick(now)
    if got is None:  # declined: the Python machine needs this tick (a CpuSample)
        assert host.wants_sample(state, now)
        assert steady.leave(state, fast) == state
        return state, None
    want, outputs, deadline = host.step(state, host.Tick(), now)
    if got == b"":
        assert outputs == [] and want == state
    else:
        assert [type(o) for o in outputs] == [host.Send]
        assert got == encode(outputs[0].msg)
    assert steady.leave(state, fast) == want
    assert fast.next_at == deadline
    return want, fast


def assert_answer_agrees(state: host.HostState, data: bytes, now: float) -> float | None:
    fast = steady.enter(state)
    rtt = fast.answer(data, now)
    if rtt is None:
        assert steady.leave(state, fast) == state  # declined: nothing changed
        return None
    decoder = codec.line_decoder(hb.MAX_MSG)
    items = decoder.feed(data)
    assert decoder.idle and len(items) == 1 and not isinstance(items[0], FrameError)
    want, outputs, deadline = host.step(state, host.Received(items[0]), now)
    assert outputs == [host.RoundTrip(rtt)]
    assert steady.leave(state, fast) == want
    assert fast.next_at == deadline
    return rtt


def test_every_guests_answer_is_taken_and_agrees() -> None:
    state, now = steady_state(5, [1.0, 2.0, 0.5, 3.0])
    assert steady.eligible(state)
    state, fast = assert_tick_agrees(state, state.deadline)
    assert fast is not None and not state.answered
    for line in (encode(answer_msg(state)),  # nfvha's guest
                 # another implementation's layout: spaces, other key order, extra keys
                 b'{ "msg_type": "challenge_response", "version": 3, "revision": 1, '
                 b'"sequence": 4294967295, "heartbeat_health": "healthy", '
                 b'"heartbeat_response": %d, "corrective_action": "none", "log_msg": "", '
                 b'"extra": "x", "more": 12 }\n' % state.nonce):
        assert assert_answer_agrees(state, line, state.challenged_at + 0.002) is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**256 - 1),
       rtts=st.lists(st.floats(0.01, 90.0), max_size=6),
       interval=st.sampled_from([100, 250, 1000]),
       sequence=st.sampled_from([0, 5, hb.UINT32_MAX - 1, hb.UINT32_MAX]),
       counter=st.sampled_from([None, 15, 31, 2**64 - 2, 2**64 - 1]),
       early=st.floats(-0.2, 2.5),
       answer_after=st.floats(0.0, 1.5))
def test_a_cycle_agrees_with_the_python_machine(seed: int, rtts: list[float], interval: int,
                                                sequence: int, counter: int | None,
                                                early: float, answer_after: float) -> None:
    changes: dict[str, object] = {"sequence": sequence}
    if counter is not None:
        changes["nonce_counter"] = counter
    state, _ = steady_state(seed, rtts, interval, **changes)
    # a tick before, at or after the deadline
    state, fast = assert_tick_agrees(state, state.deadline + early)
    if state.answered:
        state, fast = assert_tick_agrees(state, state.deadline)
    assert not state.answered
    # a tick while the challenge is out: nothing, or the Python machine's window
    assert_tick_agrees(state, state.challenged_at + answer_after * interval / 1000.0)
    # the answer, any time after
    rtt = assert_answer_agrees(state, encode(answer_msg(state)),
                               state.challenged_at + answer_after * interval / 1000.0)
    assert rtt is not None


def test_a_challenge_never_repeats_the_last_nonce() -> None:
    state, _ = steady_state(11, [1.0])
    nxt = host._prf_nonce(state.nonce_seed, state.nonce_counter + 1)
    state = evolve(state, nonce=nxt)
    state, fast = assert_tick_agrees(state, state.deadline)
    assert state.nonce == nxt ^ 1


# ---- what a guest may send: the C path declines or agrees -----------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7e, exclude_characters='"\\')
VALUES = st.one_of(st.integers(-2, 2**64), st.sampled_from([3, 3.0, "3", True, None, [], {}]),
                   st.text(max_size=8))


def near_misses(state: host.HostState) -> list[tuple[str, object]]:
    """One field of an answer set to a value one step from valid (None: removed)."""
    nonce = state.nonce
    assert nonce is not None
    out: list[tuple[str, object]] = [(k, None) for k in answer_msg(state)]
    out += [("heartbeat_health", v) for v in ("unhealthy", "Healthy", "healthy ", 1)]
    out += [("heartbeat_response", v) for v in (state.previous_nonce, nonce ^ 1,
                                                nonce + 2**32, -nonce, float(nonce),
                                                str(nonce))]
    out += [("version", v) for v in (2, "3", 3.0, True, 3 + 2**64)]
    out += [(k, v) for k in ("revision", "sequence")
            for v in (0, hb.UINT32_MAX, hb.UINT32_MAX + 1, -1, 1.5, "1", 10**18, 10**19)]
    out += [("corrective_action", v) for v in ("bogus", "stop", "none", "", "REBOOT")]
    out += [("log_msg", v) for v in ("x" * hb.LOG_MSG_MAX, "x" * (hb.LOG_MSG_MAX + 1), "é",
                                     "a\nb", "\\", "\"", "\u0000", "\x7f", 5)]
    out += [("msg_type", v) for v in ("challenge", "init", "exit", "Challenge_response")]
    return out


@st.composite
def answer_lines(draw: st.DrawFn, state: host.HostState, misses: int = 1) -> bytes:
    msg = answer_msg(state)
    for key, value in draw(st.lists(st.sampled_from(near_misses(state)), min_size=misses,
                                    max_size=misses + 1 if misses else 0)):
        if value is None:
            msg.pop(key, None)
        else:
            msg[key] = value
    # extra fields (tolerated): anything for a near miss, plain ones for a valid answer
    plain = st.one_of(st.integers(0, 10**17), st.text(PRINTABLE, max_size=8))
    for key in draw(st.lists(st.text(PRINTABLE if not misses else st.characters(),
                                     max_size=6), max_size=2)):
        if key not in msg:
            msg[key] = draw(VALUES if misses else plain)
    keys = draw(st.permutations(sorted(msg)))
    msg = {k: msg[k] for k in keys}
    text = json.dumps(msg, separators=draw(st.sampled_from([(",", ":"), (", ", ": "),
                                                            (" ,\t", " :\r")])),
                      ensure_ascii=draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")
    if misses and "log_msg" in msg and msg["log_msg"] == "" and draw(st.booleans()):
        # bytes json never writes into a string: raw control characters, invalid UTF-8
        inject = draw(st.sampled_from([b"\t", b"\x01", b"\x7f", b"\xff", b"\xc3\xa9"]))
        raw = raw.replace(b'"log_msg":', b'"log_msg":"%s",' % inject + b'"x":', 1)
    if misses and draw(st.booleans()):  # an escaped spelling of a key: the same key to json
        name = draw(st.sampled_from(sorted(answer_msg(state))))
        raw = raw[:-1] + b', "\\u00%x%s": 4}' % (ord(name[0]), name[1:].encode())
    if misses and draw(st.booleans()):  # a key twice: json keeps the last
        key = draw(st.sampled_from(sorted(answer_msg(state))))
        raw = raw[:-1] + b', "%s": %d}' % (key.encode(), draw(st.sampled_from([state.nonce, 3])))
    before = draw(st.sampled_from([b"", b"\n", b" \n\n", b"\x0b", b" ", b"\x00\n",
                                   b"\x0c\n", b"\t\r\n"]))
    after = draw(st.sampled_from([b"\n", b"", b"\r\n", b"\n\n", b"\n \n", b"\n{", b" ",
                                  b"\n\x00\n"]))
    pad = b" " * draw(st.sampled_from([0, 0, hb.MAX_MSG]))
    return before + pad + raw + after


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**64))
def test_a_near_miss_is_declined_or_agrees(data: st.DataObject, seed: int) -> None:
    state, _ = steady_state(seed, [1.0, 2.0, 3.0])
    state, _ = assert_tick_agrees(state, state.deadline)
    line = data.draw(answer_lines(state))
    assert_answer_agrees(state, line, state.challenged_at + 0.003)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**64))
def test_any_layout_of_a_valid_answer_is_taken(data: st.DataObject, seed: int) -> None:
    state, _ = steady_state(seed, [1.0, 2.0])
    state, _ = assert_tick_agrees(state, state.deadline)
    line = data.draw(answer_lines(state, misses=0))
    rtt = assert_answer_agrees(state, line, state.challenged_at + 0.003)
    clean = line.endswith(b"\n") and not line.endswith(b"\n\x00\n") \
        and b"\x0b" not in line and b"\x00" not in line and b"\n{" not in line \
        and max(map(len, line.split(b"\n"))) <= hb.MAX_MSG
    if clean and line.count(b'"heartbeat_response"') == 1 and line.isascii():
        assert rtt is not None  # every such line is a valid answer: the C path takes it


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes_are_declined_or_agree(raw: bytes) -> None:
    state, _ = steady_state(3, [1.0])
    state, _ = assert_tick_agrees(state, state.deadline)
    assert_answer_agrees(state, raw, state.challenged_at + 0.003)
    assert_answer_agrees(state, raw + b"\n", state.challenged_at + 0.003)


def test_an_answer_is_taken_once_and_a_stale_one_never() -> None:
    state, _ = steady_state(21, [1.0, 1.0])
    state, fast = assert_tick_agrees(state, state.deadline)
    line = encode(answer_msg(state))
    stale = encode(answer_msg(replace(state, nonce=state.previous_nonce)))
    assert fast.answer(stale, state.challenged_at + 0.001) is None  # Python words it
    assert fast.answer(line, state.challenged_at + 0.001) is not None
    assert fast.answer(line, state.challenged_at + 0.002) is None  # a replay: Python's


def test_the_c_path_never_changes_what_the_agent_reads_without_a_snapshot() -> None:
    state, _ = steady_state(2, [1.0])
    fast = steady.enter(state)
    fast.tick(state.deadline)
    # InstanceSession.phase / health / starved read the Python state directly
    assert not {"phase", "health", "starved", "registration"} & set(fast.export())


def test_a_state_that_is_not_steady_is_not_taken() -> None:
    state, _ = steady_state(1, [1.0])
    assert steady.eligible(state)
    for changes in ({"health": "unhealthy"}, {"phase": host.FAILED}, {"misses": 1},
                    {"starved": True}, {"extended_streak": 1}, {"answered": False},
                    {"connected": False}, {"lag_extended": True}):
        assert not steady.eligible(evolve(state, **changes)), changes
