"""Guest heartbeat machine: registration, answers, host loss, votes, stop (fake clock)."""
from __future__ import annotations

from typing import List, Optional

import pytest

from nfvha.protocol import guest
from nfvha.protocol import heartbeat as hb
from nfvha.protocol.guest import (
    GuestConfig,
    Health,
    HostGone,
    HostLost,
    Ignored,
    Received,
    Registered,
    RunEventScript,
    Send,
    Start,
    Stop,
    Tick,
    VoteResult,
)

CFG = GuestConfig(invocation_id=4242, name="vm-a", interval_ms=250, corrective_action="reboot")


class Drive:
    def __init__(self, cfg: GuestConfig = CFG) -> None:
        self.state = guest.initial(cfg)
        self.now = 0.0
        self.deadline: Optional[float] = None
        self.sent: List[dict] = []

    def feed(self, event: object, at: Optional[float] = None) -> list:
        if at is not None:
            self.now = max(self.now, at)
        self.state, outputs, self.deadline = guest.step(self.state, event, self.now)
        self.sent.extend(o.msg for o in outputs if isinstance(o, Send))
        return outputs

    def run_until(self, t: float) -> list:
        out = []
        while self.deadline is not None and self.deadline <= t:
            out += self.feed(Tick(), at=self.deadline)
        self.now = max(self.now, t)
        return out

    def registered(self) -> Drive:
        self.feed(Start())
        self.feed(Received(hb.build_init_ack(sequence=1, invocation_id=CFG.invocation_id)))
        return self

    def challenge(self, value: int, at: float, health: Health = guest.HEALTHY) -> list:
        return self.feed(Received(hb.build_challenge(sequence=9, heartbeat_challenge=value),
                                  health), at=at)


def sent_types(outputs: list) -> List[str]:
    return [o.msg["msg_type"] for o in outputs if isinstance(o, Send)]


def test_start_sends_init_with_the_configured_facts() -> None:
    d = Drive()
    out = d.feed(Start())
    (msg,) = [o.msg for o in out]
    assert hb.validate(msg) is None
    assert (msg["msg_type"], msg["invocation_id"], msg["name"], msg["heartbeat_interval_ms"],
            msg["corrective_action"]) == ("init", 4242, "vm-a", 250, "reboot")
    assert d.deadline == pytest.approx(1.0)  # init retry


def test_init_is_retried_until_acked() -> None:
    d = Drive()
    d.feed(Start())
    out = d.run_until(3.5)
    assert sent_types(out) == ["init", "init", "init"]
    out = d.feed(Received(hb.build_init_ack(sequence=1, invocation_id=4242)), at=3.6)
    assert out == [Registered()]
    assert d.run_until(4.9) == []


def test_ack_for_another_invocation_is_ignored() -> None:
    d = Drive()
    d.feed(Start())
    out = d.feed(Received(hb.build_init_ack(sequence=1, invocation_id=1)))
    assert [type(o) for o in out] == [Ignored]
    assert d.state.phase == "registering"


def test_challenge_is_echoed_with_current_health() -> None:
    d = Drive().registered()
    out = d.challenge(2**31 - 1, at=0.1)
    (msg,) = [o.msg for o in out]
    assert hb.validate(msg) is None
    assert (msg["msg_type"], msg["heartbeat_response"], msg["heartbeat_health"],
            msg["corrective_action"]) == ("challenge_response", 2**31 - 1, "healthy", "reboot")
    out = d.challenge(5, at=0.2, health=Health(False, "stop", "disk full"))
    (msg,) = [o.msg for o in out]
    assert (msg["heartbeat_health"], msg["corrective_action"], msg["log_msg"]) == (
        "unhealthy", "stop", "disk full")


def test_unknown_corrective_action_in_health_falls_back_to_configured() -> None:
    d = Drive().registered()
    (msg,) = [o.msg for o in d.challenge(5, at=0.1, health=Health(False, "explode", "x"))]
    assert msg["corrective_action"] == "reboot"


def test_challenge_before_ack_is_answered_too() -> None:
    d = Drive()
    d.feed(Start())
    assert sent_types(d.challenge(7, at=0.1)) == ["challenge_response"]
    assert d.state.phase == "registering"


def test_nack_re_registers_at_once() -> None:
    d = Drive().registered()
    out = d.feed(Received(hb.build_nack(sequence=1, invocation_id=0, log_msg="who?")), at=1.0)
    assert sent_types(out) == ["init"]
    assert d.state.phase == "registering"


def test_nack_flood_while_registering_sends_no_extra_inits() -> None:
    d = Drive()
    d.feed(Start())
    for i in range(100):
        assert d.feed(Received(hb.build_nack(sequence=i, invocation_id=0)), at=0.001 * i) == []
    assert sent_types(d.run_until(1.0)) == ["init"]  # just the regular retry


def test_host_declared_gone_after_5s_without_challenge_then_reinit() -> None:
    d = Drive().registered()
    d.challenge(1, at=1.0)
    assert d.run_until(5.99) == []
    out = d.run_until(6.0)
    assert out[0] == HostLost() and sent_types(out) == ["init"]
    assert d.state.phase == "registering"


def test_host_gone_timeout_is_twice_the_interval_when_longer() -> None:
    cfg = GuestConfig(invocation_id=1, name="x", interval_ms=4000)
    d = Drive(cfg)
    d.feed(Start())
    d.feed(Received(hb.build_init_ack(sequence=1, invocation_id=1)), at=0.0)
    assert d.run_until(7.99) == []
    assert HostLost() in d.run_until(8.0)


def test_regular_challenges_keep_host_alive() -> None:
    d = Drive().registered()
    for i in range(100):
        d.challenge(i, at=i * 0.25)
        assert not any(isinstance(o, HostLost) for o in d.run_until(i * 0.25 + 0.2))


def test_host_gone_then_start_reregisters() -> None:
    d = Drive().registered()
    out = d.feed(HostGone(), at=1.0)
    assert out == [HostLost()]
    assert d.deadline is None and d.state.phase == "offline"
    assert d.challenge(1, at=1.1)[0].__class__ is Ignored  # nothing goes out while offline
    out = d.feed(Start(), at=2.0)
    assert sent_types(out) == ["init"]


def test_host_gone_while_registering_is_quiet() -> None:
    d = Drive()
    d.feed(Start())
    assert d.feed(HostGone()) == []


def test_stop_sends_exit_and_silences_everything() -> None:
    d = Drive().registered()
    out = d.feed(Stop(), at=1.0)
    assert sent_types(out) == ["exit"]
    assert hb.validate(out[0].msg) is None
    assert d.deadline is None
    assert d.challenge(3, at=1.1)[0].__class__ is Ignored
    assert d.feed(Start())[0].__class__ is Ignored


def test_stop_while_offline_sends_nothing() -> None:
    d = Drive().registered()
    d.feed(HostGone())
    assert d.feed(Stop()) == []


def notify(inv: int, kind: str = "revocable", timeout_ms: int = 3000,
           event: str = "reboot") -> Received:
    return Received(hb.build_action_notify(sequence=5, invocation_id=inv, event_type=event,
                                           notification_type=kind, timeout_ms=timeout_ms))


def test_vote_runs_the_script_and_answers_its_result() -> None:
    d = Drive().registered()
    out = d.feed(notify(7), at=1.0)
    assert out == [RunEventScript(7, "reboot", "revocable", 2900)]
    out = d.feed(VoteResult(7, "reject", "busy"), at=1.5)
    (msg,) = [o.msg for o in out]
    assert hb.validate(msg) is None
    assert (msg["msg_type"], msg["invocation_id"], msg["event_type"], msg["notification_type"],
            msg["vote_result"], msg["log_msg"]) == (
        "action_response", 7, "reboot", "revocable", "reject", "busy")


def test_vote_without_result_in_time_answers_timeout_and_late_result_is_dropped() -> None:
    d = Drive().registered()
    d.challenge(1, at=0.5)
    d.feed(notify(8, timeout_ms=1000), at=1.0)
    out = d.run_until(1.9)
    assert [o.msg["vote_result"] for o in out if isinstance(o, Send)] == ["timeout"]
    out = d.feed(VoteResult(8, "accept"), at=2.0)
    assert [type(o) for o in out] == [Ignored]


def test_notice_is_answered_too() -> None:
    d = Drive().registered()
    d.feed(notify(9, kind="irrevocable", event="stop"), at=1.0)
    out = d.feed(VoteResult(9, "complete"))
    assert [o.msg["vote_result"] for o in out] == ["complete"]


def test_unknown_vote_result_becomes_error() -> None:
    d = Drive().registered()
    d.feed(notify(10))
    assert [o.msg["vote_result"] for o in d.feed(VoteResult(10, "maybe"))] == ["error"]


def test_too_many_pending_votes_are_answered_error_at_once() -> None:
    d = Drive().registered()
    for i in range(CFG.max_pending_votes):
        assert isinstance(d.feed(notify(100 + i))[0], RunEventScript)
    out = d.feed(notify(999))
    assert [o.msg["vote_result"] for o in out] == ["error"]
    assert isinstance(d.feed(notify(100))[0], Ignored)  # duplicate of a pending one


def test_votes_are_dropped_when_the_host_goes() -> None:
    d = Drive().registered()
    d.feed(notify(11), at=1.0)
    d.feed(HostGone(), at=1.1)
    assert d.state.votes == () and d.deadline is None


@pytest.mark.parametrize(
    "msg",
    [
        {"junk": 1},
        hb.build_challenge_response(sequence=1, heartbeat_response=1, heartbeat_health="healthy",
                                    corrective_action="none"),
        hb.build_init(sequence=1, invocation_id=1, name="x", heartbeat_interval_ms=1,
                      corrective_action="none"),
        {"version": 3, "revision": 1, "msg_type": "challenge", "sequence": 1,
         "heartbeat_challenge": "x"},
    ],
)
def test_bad_or_unexpected_messages_are_ignored(msg: dict) -> None:
    d = Drive().registered()
    before = d.state.phase
    out = d.feed(Received(msg))
    assert [type(o) for o in out] == [Ignored]
    assert d.state.phase == before


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError):
        guest.initial(GuestConfig(invocation_id=1, name="x", corrective_action="explode"))
    with pytest.raises(ValueError):
        guest.initial(GuestConfig(invocation_id=-1, name="x"))
