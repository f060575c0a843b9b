"""The host machine against exactly what the real StarlingX guest client sent.

Source: tests/data/starlingx-guest-client-transcript.txt (guest-client
3.0.1, HB_INTERVAL=400). The client parses a challenge as int32 and answers
2147483647 to anything above 2**31-1, so our challenges must stay below that.
"""
from __future__ import annotations

import ast
import json
import os
from typing import List, Tuple

from nfvha.protocol import host
from nfvha.protocol.framing import LineDecoder
from nfvha.protocol.host import (
    ActionResult,
    Connected,
    Fault,
    HostConfig,
    NotifyAction,
    Received,
    RoundTrip,
    Send,
    StateChanged,
    Tick,
    Violation,
)

# The bytes of the real StarlingX guest client, captured once and kept with the
# tests.
TRANSCRIPT = os.path.join(os.path.dirname(__file__), "data",
                          "starlingx-guest-client-transcript.txt")
INT32_MAX = 2**31 - 1


def transcript() -> List[Tuple[str, bytes]]:
    out = []
    with open(TRANSCRIPT, encoding="utf-8") as f:
        for line in f:
            if line.startswith(("G->H ", "H->G ")):
                direction, literal = line.split(" ", 1)
                out.append((direction, ast.literal_eval(literal.strip())))
    assert len(out) > 10
    return out


def starlingx_parses(challenge: int) -> int:
    # What guest-client 3.0.1 echoes: the value parsed as a saturating int32.
    return min(challenge, INT32_MAX)


def test_guest_client_registers_is_heartbeated_and_fails_when_it_stops() -> None:
    lines = transcript()
    decoder = LineDecoder()
    # Two misses to fail: the replay leaves our own first challenge (sent at
    # init, before the transcript's values) unanswered.
    state = host.initial(HostConfig(failure_threshold=2), nonce_seed=7)
    state, out, deadline = host.step(state, Connected(), 0.0)
    now = 0.0
    all_out: list = []
    accepted = 0

    # The test host of the transcript challenged with these values, in order.
    challenge_values = [json.loads(b)["heartbeat_challenge"] for d, b in lines
                        if d == "H->G" and b'"challenge"' in b]
    guest_lines = [b for d, b in lines if d == "G->H"]

    # 1. init, exactly the client's bytes.
    (init,) = decoder.feed(guest_lines[0] + b"\n")
    state, out, deadline = host.step(state, Received(init), now)
    sent = [o.msg for o in out if isinstance(o, Send)]
    assert [m["msg_type"] for m in sent] == ["init_ack", "challenge"]
    assert sent[0]["invocation_id"] == 1804289383
    (sc,) = [o for o in out if isinstance(o, StateChanged)]
    assert (sc.state, sc.interval_ms, sc.corrective_action, sc.name) == (
        "enabled", 400, "reboot", "cgcs.heartbeat")
    assert (sc.vote_secs, sc.resume_notice_secs, sc.restart_secs) == (9, 14, 601)
    assert 0 <= sent[1]["heartbeat_challenge"] <= INT32_MAX

    # 2. Each response of the client, fed after the host issued the same challenge
    #    the transcript host did (when int32-safe, as all of ours are).
    responses = [b for b in guest_lines if b"challenge_response" in b]
    assert len(responses) == len(challenge_values)
    for value, raw in zip(challenge_values, responses):
        if value > INT32_MAX:
            # The client answered 2147483647: a challenge this host never issues.
            assert json.loads(raw)["heartbeat_response"] == INT32_MAX
            continue
        assert state.deadline is not None
        now = state.deadline  # the next challenge (the machine may wake earlier to judge)
        state, out, deadline = host.step(state, Tick(nonce=value), now)
        all_out += out
        (msg,) = decoder.feed(b"\n" + raw + b"\n")
        state, out, deadline = host.step(state, Received(msg), now + 0.003)
        all_out += out
        assert [type(o) for o in out if not isinstance(o, StateChanged)] == [RoundTrip]
        accepted += 1
    assert accepted == 5
    assert state.phase == "enabled" and state.health == "healthy"

    # 3. A vote: our action_notify has the fields and types of the one the
    #    client answered in the transcript; the client echoes the invocation id
    #    (7 there), so its answer with ours in place of 7 ends our vote.
    state, out, deadline = host.step(state, NotifyAction("reboot", "revocable", 3000),
                                     now + 0.005)
    (ours,) = [o.msg for o in out if isinstance(o, Send)]
    theirs = json.loads([b for d, b in lines if d == "H->G" and b"action_notify" in b][0])
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in theirs.items()}
    assert {k: ours[k] for k in ("event_type", "notification_type", "timeout_ms")} == {
        k: theirs[k] for k in ("event_type", "notification_type", "timeout_ms")}
    (vote,) = decoder.feed(guest_lines[-1] + b"\n")
    assert vote["invocation_id"] == theirs["invocation_id"]
    state, out, _ = host.step(state, Received(vote), now + 0.008)
    assert [type(o) for o in out] == [Violation]  # not an answer to *our* notify
    state, out, deadline = host.step(
        state, Received(dict(vote, invocation_id=ours["invocation_id"])), now + 0.01)
    assert out == [ActionResult("reboot", "revocable", "unknown", "")]

    # 4. The client stops answering: heartbeat loss at the second unanswered
    #    challenge's response deadline (400 ms interval: StarlingX's floor).
    stop_at = now + 0.01
    faults = []
    while deadline is not None and not faults:
        now = deadline
        state, out, deadline = host.step(state, Tick(), now)
        faults = [o for o in out if isinstance(o, Fault)]
    assert [f.kind for f in faults] == ["heartbeat_loss"]
    assert faults[0].corrective_action == "reboot"
    assert 0.4 <= now - stop_at <= 1.2
    assert not [o for o in all_out if isinstance(o, (Violation, Fault))]


def test_challenges_this_host_draws_are_always_answerable_by_the_client() -> None:
    state = host.initial(HostConfig(), nonce_seed=0xDEADBEEF)
    lines = transcript()
    template = json.loads(lines[3][1])  # a client response, to echo our nonces in
    (init,) = LineDecoder().feed(lines[0][1] + b"\n")
    state, out, deadline = host.step(state, Received(init), 0.0)
    for i in range(5000):
        issued = [o.msg for o in out if isinstance(o, Send)][-1]["heartbeat_challenge"]
        assert starlingx_parses(issued) == issued
        reply = dict(template)
        reply["heartbeat_response"] = starlingx_parses(issued)
        state, out, _ = host.step(state, Received(reply), state.challenged_at + 0.002)
        assert [type(o) for o in out if not isinstance(o, StateChanged)] == [RoundTrip], i
        state, out, deadline = host.step(state, Tick(), state.deadline)
