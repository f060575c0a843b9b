"""Host heartbeat machine: every edge, driven with a fake clock."""
from __future__ import annotations

from typing import List, Optional

import pytest

from nfvha.protocol import heartbeat as hb
from nfvha.protocol import host
from nfvha.protocol.host import (
    Connected,
    Disconnected,
    Fault,
    HostConfig,
    Malformed,
    Received,
    RoundTrip,
    Send,
    StateChanged,
    Tick,
    Violation,
)


def init_msg(invocation_id: int = 11, interval_ms: int = 250, action: str = "reboot",
             name: str = "vm-1") -> dict:
    return hb.build_init(sequence=1, invocation_id=invocation_id, name=name,
                         heartbeat_interval_ms=interval_ms, corrective_action=action)


def response(nonce: int, health: str = "healthy", action: str = "reboot",
             log_msg: str = "") -> dict:
    return hb.build_challenge_response(sequence=2, heartbeat_response=nonce,
                                       heartbeat_health=health, corrective_action=action,
                                       log_msg=log_msg)


class Drive:
    """Feeds events with a fake clock and fires Ticks at the machine's deadlines."""

    def __init__(self, config: HostConfig = HostConfig(), seed: int = 1) -> None:
        self.state = host.initial(config, nonce_seed=seed)
        self.now = 0.0
        self.deadline: Optional[float] = None
        self.sent: List[dict] = []

    def feed(self, event: object, at: Optional[float] = None) -> list:
        if at is not None:
            assert at >= self.now
            self.now = at
        self.state, outputs, self.deadline = host.step(self.state, event, self.now)
        self.sent.extend(o.msg for o in outputs if isinstance(o, Send))
        return outputs

    def run_until(self, t: float) -> list:
        """Fires every Tick due up to time t (the guest says nothing meanwhile)."""
        outputs = []
        while self.deadline is not None and self.deadline <= t:
            outputs += self.feed(Tick(), at=max(self.deadline, self.now))
        self.now = max(self.now, t)
        return outputs

    def last_challenge(self) -> int:
        for msg in reversed(self.sent):
            if msg["msg_type"] == "challenge":
                return msg["heartbeat_challenge"]
        raise AssertionError("no challenge sent")

    def answer(self, at: float, **kw: object) -> list:
        return self.feed(Received(response(self.last_challenge(), **kw)), at=at)

    def registered(self, interval_ms: int = 250, **kw: object) -> Drive:
        self.feed(Connected())
        self.feed(Received(init_msg(interval_ms=interval_ms, **kw)))
        return self


def kinds(outputs: list, cls: type) -> list:
    return [o for o in outputs if isinstance(o, cls)]


def test_initial_state_is_waiting_without_timer() -> None:
    d = Drive()
    assert d.state.phase == "waiting"
    assert d.feed(Connected()) == [StateChanged("waiting", None, None, None, None)]
    assert d.deadline is None
    assert d.feed(Tick(), at=100.0) == []


def test_registration_acks_enables_and_challenges_at_once() -> None:
    d = Drive()
    d.feed(Connected())
    out = d.feed(Received(init_msg(invocation_id=77, interval_ms=250)), at=1.0)
    sends = [o.msg for o in kinds(out, Send)]
    assert [m["msg_type"] for m in sends] == ["init_ack", "challenge"]
    assert sends[0]["invocation_id"] == 77
    (sc,) = kinds(out, StateChanged)
    assert (sc.state, sc.health, sc.interval_ms, sc.corrective_action, sc.name) == (
        "enabled", None, 250, "reboot", "vm-1")
    assert (sc.invocation_id, sc.vote_secs, sc.shutdown_notice_secs, sc.suspend_notice_secs,
            sc.resume_notice_secs, sc.restart_secs) == (77, 8, 8, 8, 13, 600)
    # the next challenge one interval on; the first one's response deadline is
    # the interval too, until round trips have been measured
    assert d.state.deadline == pytest.approx(1.25)
    assert d.state.respond_by == pytest.approx(1.25)
    assert [m["sequence"] for m in d.sent] == [1, 2]  # our own per-sender counter


@pytest.mark.parametrize("asked, got", [(1, 100), (99, 100), (250, 250), (10**9, 60000)])
def test_interval_is_clamped(asked: int, got: int) -> None:
    d = Drive().registered(interval_ms=asked)
    assert d.state.interval_ms == got
    assert d.state.registration.requested_interval_ms == asked


def test_valid_answers_keep_it_enabled_with_a_challenge_every_interval() -> None:
    d = Drive().registered()
    for _i in range(20):
        out = d.answer(at=d.now + 0.01)
        assert kinds(out, RoundTrip) == [RoundTrip(pytest.approx(10.0))]
        assert d.state.rtt_ms == pytest.approx(10.0)
        out = d.run_until(d.deadline)
        assert kinds(out, Fault) == []
    challenges = [m for m in d.sent if m["msg_type"] == "challenge"]
    assert len(challenges) == 21
    assert d.state.phase == "enabled" and d.state.health == "healthy"


def test_first_answer_reports_health_once() -> None:
    d = Drive().registered()
    out = d.answer(at=0.01)
    assert [s.health for s in kinds(out, StateChanged)] == ["healthy"]
    d.run_until(d.deadline)
    assert kinds(d.answer(at=d.now + 0.01), StateChanged) == []


def test_nonces_are_int32_safe_and_never_repeat_back_to_back() -> None:
    d = Drive(seed=12345).registered(interval_ms=100)
    for _ in range(2000):
        d.answer(at=d.now + 0.001)
        d.run_until(d.deadline)
    nonces = [m["heartbeat_challenge"] for m in d.sent if m["msg_type"] == "challenge"]
    assert all(0 <= n <= 2**31 - 1 for n in nonces)
    assert all(a != b for a, b in zip(nonces, nonces[1:]))
    assert len(set(nonces)) > 1990  # a PRNG, not a counter stuck on a few values
    assert max(nonces) > 2**30  # the upper half of the int32 range is used too


def test_different_seeds_give_different_nonces() -> None:
    a, b = Drive(seed=1).registered(), Drive(seed=2).registered()
    assert a.last_challenge() != b.last_challenge()


def test_caller_chosen_nonce_is_used() -> None:
    d = Drive().registered()
    d.answer(at=0.01)
    d.feed(Tick(nonce=424242), at=d.deadline)
    assert d.last_challenge() == 424242


def test_one_miss_under_threshold_two_then_recovery_is_no_fault() -> None:
    d = Drive(HostConfig(failure_threshold=2)).registered()
    out = d.run_until(0.25)  # first challenge unanswered: miss 1
    assert kinds(out, Fault) == [] and d.state.misses == 1
    out = d.answer(at=0.3)
    assert kinds(out, Fault) == [] and d.state.misses == 0
    out = d.run_until(0.5)
    assert kinds(out, Fault) == [] and d.state.phase == "enabled"


def test_first_unanswered_challenge_gives_heartbeat_loss_once_and_failed() -> None:
    d = Drive().registered(action="stop")
    d.answer(at=0.01)
    out = d.run_until(0.25)  # answered -> no miss, new challenge
    assert kinds(out, Fault) == []
    out = d.run_until(0.5)  # unanswered at its response deadline (the interval: 1 sample)
    (fault,) = kinds(out, Fault)
    assert fault.kind == "heartbeat_loss" and fault.corrective_action == "stop"
    assert [s.state for s in kinds(out, StateChanged)] == ["failed"]
    # Challenges continue while failed, one per interval, with no further faults.
    out = d.run_until(5.0)
    assert kinds(out, Fault) == []
    assert sum(1 for o in out if isinstance(o, Send)) == 18
    assert d.state.phase == "failed"


def test_failed_then_valid_answer_re_enables_and_a_new_loss_faults_again() -> None:
    d = Drive().registered()
    d.run_until(0.5)
    assert d.state.phase == "failed"
    out = d.answer(at=0.6)  # one answer: alive, but not yet trusted again
    assert [s.state for s in kinds(out, StateChanged)] == ["failed"]  # health learned
    d.run_until(0.75)
    out = d.answer(at=0.76)  # reenable_after (2) answers in a row
    assert [s.state for s in kinds(out, StateChanged)] == ["enabled"]
    assert kinds(out, Fault) == []
    out = d.run_until(1.25)
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]


@pytest.mark.parametrize("threshold", [1, 3, 5])
def test_failure_threshold_is_honoured(threshold: int) -> None:
    d = Drive(HostConfig(failure_threshold=threshold)).registered(interval_ms=100)
    d.answer(at=0.01)
    d.run_until(0.1 + 0.1 * (threshold - 1) + 0.05)
    assert d.state.phase == "enabled"
    out = d.run_until(0.1 + 0.1 * threshold + 0.05)
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]


def test_unhealthy_faults_once_per_transition_with_its_own_action() -> None:
    d = Drive().registered(action="reboot")
    out = d.answer(at=0.01, health="unhealthy", action="stop", log_msg="db down")
    (fault,) = kinds(out, Fault)
    assert (fault.kind, fault.corrective_action, fault.detail) == ("unhealthy", "stop", "db down")
    assert [s.health for s in kinds(out, StateChanged)] == ["unhealthy"]
    for _ in range(5):  # still unhealthy: no new fault
        d.run_until(d.deadline)
        assert kinds(d.answer(at=d.now + 0.01, health="unhealthy"), Fault) == []
    d.run_until(d.deadline)
    out = d.answer(at=d.now + 0.01)  # healthy again: state change, no fault
    assert kinds(out, Fault) == [] and [s.health for s in kinds(out, StateChanged)] == ["healthy"]
    d.run_until(d.deadline)
    out = d.answer(at=d.now + 0.01, health="unhealthy", action="none")
    assert [(f.kind, f.corrective_action) for f in kinds(out, Fault)] == [("unhealthy", "none")]


def test_unhealthy_answer_still_counts_as_alive() -> None:
    d = Drive().registered()
    for _ in range(10):
        d.answer(at=d.now + 0.01, health="unhealthy")
        out = d.run_until(d.deadline)
        assert [f.kind for f in kinds(out, Fault)] == []
    assert d.state.phase == "enabled"


def test_exit_disables_without_fault_and_stops_the_timer() -> None:
    d = Drive().registered()
    d.answer(at=0.01)
    out = d.feed(Received(hb.build_exit(sequence=3, log_msg="bye")), at=0.1)
    assert kinds(out, Fault) == []
    assert [s.state for s in kinds(out, StateChanged)] == ["disabled"]
    assert d.deadline is None
    assert d.run_until(100.0) == []
    assert kinds(d.feed(Disconnected(), at=101.0), Fault) == []  # then the channel closes


def test_exit_while_failed_disables_without_fault() -> None:
    d = Drive().registered()
    d.run_until(0.5)
    out = d.feed(Received(hb.build_exit(sequence=3)), at=0.6)
    assert kinds(out, Fault) == [] and d.state.phase == "disabled"


def test_reinit_after_guest_reboot_is_no_fault_and_restarts_challenges() -> None:
    d = Drive().registered()
    d.answer(at=0.01)
    d.run_until(0.25)  # the guest reboots: this challenge goes unanswered (miss 1)
    out = d.feed(Received(init_msg(invocation_id=999)), at=0.3)
    assert kinds(out, Fault) == []
    assert [m.msg["msg_type"] for m in kinds(out, Send)] == ["init_ack", "challenge"]
    (sc,) = kinds(out, StateChanged)
    assert sc.invocation_id == 999 and sc.state == "enabled"
    assert d.state.misses == 0 and d.state.deadline == pytest.approx(0.55)


def test_reinit_while_failed_re_enables_without_fault() -> None:
    d = Drive().registered()
    d.run_until(0.5)
    out = d.feed(Received(init_msg(invocation_id=1000)), at=0.6)
    assert kinds(out, Fault) == [] and d.state.phase == "enabled"


def test_duplicate_init_is_reacked_without_resetting_the_rhythm() -> None:
    d = Drive().registered()
    nonce, deadline = d.last_challenge(), d.deadline
    out = d.feed(Received(init_msg()), at=0.1)
    assert [type(o) for o in out] == [Send]
    assert out[0].msg["msg_type"] == "init_ack"
    assert d.last_challenge() == nonce and d.deadline == deadline


def test_reinit_after_exit_enables_again() -> None:
    d = Drive().registered()
    d.feed(Received(hb.build_exit(sequence=3)), at=0.1)
    d.feed(Received(init_msg(invocation_id=12)), at=0.2)
    assert d.state.phase == "enabled" and d.deadline is not None


def test_response_before_init_is_nacked_and_a_violation() -> None:
    # Our host agent restarted: the guest still answers a challenge of the old one.
    d = Drive()
    d.feed(Connected())
    out = d.feed(Received(response(12345)), at=0.1)
    assert len(kinds(out, Violation)) == 1
    (send,) = kinds(out, Send)
    assert send.msg["msg_type"] == "nack"
    assert d.state.phase == "waiting" and d.deadline is None


def test_response_after_exit_is_nacked() -> None:
    d = Drive().registered()
    d.feed(Received(hb.build_exit(sequence=3)), at=0.1)
    out = d.feed(Received(response(1)), at=0.2)
    assert [o.msg["msg_type"] for o in kinds(out, Send)] == ["nack"]


def test_disconnect_while_enabled_is_channel_lost() -> None:
    d = Drive().registered(action="log")
    d.answer(at=0.01)
    out = d.feed(Disconnected(), at=0.1)
    assert [(f.kind, f.corrective_action) for f in kinds(out, Fault)] == [("channel_lost", "log")]
    assert d.deadline is None and d.state.phase == "failed"
    assert d.run_until(10.0) == []


def test_disconnect_while_failed_is_channel_lost_too() -> None:
    d = Drive().registered()
    d.run_until(0.5)
    out = d.feed(Disconnected(), at=0.6)
    assert [f.kind for f in kinds(out, Fault)] == ["channel_lost"]
    assert kinds(out, StateChanged) == []  # already failed


@pytest.mark.parametrize("how", ["never-registered", "after-exit"])
def test_disconnect_without_registration_is_no_fault(how: str) -> None:
    d = Drive()
    d.feed(Connected())
    if how == "after-exit":
        d.feed(Received(init_msg()))
        d.feed(Received(hb.build_exit(sequence=3)))
    assert kinds(d.feed(Disconnected(), at=1.0), Fault) == []


def test_reconnect_waits_for_a_new_init() -> None:
    d = Drive().registered()
    d.feed(Disconnected(), at=0.1)
    out = d.feed(Connected(), at=0.2)
    assert [s.state for s in kinds(out, StateChanged)] == ["waiting"]
    assert d.deadline is None
    d.feed(Received(init_msg()), at=0.3)
    assert d.state.phase == "enabled"


def test_late_response_is_a_violation_and_a_miss() -> None:
    d = Drive().registered()
    old = d.last_challenge()
    d.run_until(0.25)  # the next challenge went out; old one unanswered
    out = d.feed(Received(response(old)), at=0.26)
    (v,) = kinds(out, Violation)
    assert "late" in v.reason
    assert d.state.misses == 1 and not d.state.answered


def test_response_after_deadline_before_tick_is_proof_of_life() -> None:
    d = Drive().registered()
    out = d.answer(at=0.2501)  # the Tick at 0.25 has not been fed yet
    assert kinds(out, Violation) == [] and kinds(out, RoundTrip) == [RoundTrip(
        pytest.approx(250.1))]
    out = d.run_until(0.26)  # the late Tick: nothing to judge, the next challenge
    assert kinds(out, Fault) == [] and d.state.phase == "enabled"


def test_replayed_response_is_a_violation_and_does_not_satisfy_the_next() -> None:
    d = Drive().registered()
    first = response(d.last_challenge())
    d.feed(Received(first), at=0.01)
    out = d.feed(Received(first), at=0.02)
    assert "replayed" in kinds(out, Violation)[0].reason
    d.run_until(0.25)
    d.feed(Received(first), at=0.3)  # replaying the old answer to the new challenge
    d.run_until(0.5)
    assert d.state.misses == 1


def test_wrong_nonce_is_a_violation_and_never_satisfies() -> None:
    d = Drive().registered()
    for n in range(50):  # a guest guessing nonces
        out = d.feed(Received(response(n)), at=0.001 * n)
        assert len(kinds(out, Violation)) == 1 and kinds(out, RoundTrip) == []
    d.run_until(0.5)
    assert d.state.phase == "failed"
    assert d.state.violations == 50


@pytest.mark.parametrize(
    "msg",
    [
        {"garbage": True},
        {"version": 3, "msg_type": "challenge_response"},
        hb.build_challenge(sequence=1, heartbeat_challenge=1),  # host-to-guest type
        hb.build_init_ack(sequence=1, invocation_id=1),
        hb.build_nack(sequence=1, invocation_id=1),
        hb.build_action_response(sequence=1, invocation_id=1, event_type="stop",
                                 notification_type="revocable", vote_result="accept"),
    ],
)
def test_malformed_or_unexpected_input_is_a_violation_without_state_change(msg: dict) -> None:
    d = Drive()
    d.feed(Connected())
    before = d.state
    out = d.feed(Received(msg), at=0.1)
    assert [type(o) for o in out] == [Violation]
    assert d.state.phase == before.phase and d.state.violations == 1


def test_frame_errors_are_violations() -> None:
    d = Drive().registered()
    out = d.feed(Malformed("oversized"), at=0.01)
    assert out == [Violation("malformed frame: oversized")]
    assert d.state.phase == "enabled"


def test_action_response_with_no_action_pending_is_a_violation() -> None:
    d = Drive().registered()
    out = d.feed(Received(hb.build_action_response(
        sequence=1, invocation_id=1, event_type="stop", notification_type="revocable",
        vote_result="accept")), at=0.01)
    assert out == [Violation("action_response with no action pending")]
    assert d.state.phase == "enabled"


def test_early_or_spurious_ticks_change_nothing() -> None:
    d = Drive().registered()
    before = d.state
    assert d.feed(Tick(), at=0.1) == []
    assert d.state == before


def test_flood_of_garbage_between_valid_answers_keeps_it_enabled() -> None:
    d = Drive().registered(interval_ms=100)
    for _ in range(30):
        for i in range(100):
            d.feed(Received(response(i)), at=d.now)
            d.feed(Malformed("invalid-json"), at=d.now)
        d.answer(at=d.now + 0.005)
        out = d.run_until(d.deadline)
        assert kinds(out, Fault) == []
    assert d.state.phase == "enabled"


def test_invalid_config_is_refused() -> None:
    for cfg in (HostConfig(failure_threshold=0), HostConfig(min_interval_ms=0),
                HostConfig(min_interval_ms=500, max_interval_ms=400)):
        with pytest.raises(ValueError):
            host.initial(cfg)


def test_step_refuses_unknown_event_types() -> None:
    with pytest.raises(TypeError):
        host.step(host.initial(HostConfig()), object(), 0.0)  # type: ignore[arg-type]


def test_states_stay_frozen_after_steps() -> None:
    import dataclasses

    d = Drive().registered()
    d.answer(at=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.state.phase = "failed"  # type: ignore[misc]
    assert d.state == dataclasses.replace(d.state)  # equality by fields still holds
    hash(d.state)


def test_an_early_tick_moves_the_phase_only_once_the_challenge_is_answered() -> None:
    d = Drive().registered(interval_ms=250)  # challenge 1 at 0.0, due 0.25
    first = d.last_challenge()
    assert d.feed(Tick(early=True), at=0.1) == []  # not answered yet: nothing moves
    assert d.state.deadline == pytest.approx(0.25)
    d.answer(at=0.11)
    out = d.feed(Tick(early=True), at=0.12)
    assert [o.msg["msg_type"] for o in out if isinstance(o, Send)] == ["challenge"]
    assert d.last_challenge() != first and d.state.deadline == pytest.approx(0.37)


def test_a_hang_right_after_an_early_tick_is_declared_within_two_intervals() -> None:
    d = Drive().registered(interval_ms=250)
    d.answer(at=0.001)
    d.feed(Tick(early=True), at=0.24)  # the latest re-phasing the session picks
    faults: list = []
    while not faults:  # the guest hung after its first answer
        assert d.deadline is not None and d.deadline < 2.0
        faults = [o for o in d.feed(Tick(), at=d.deadline) if isinstance(o, Fault)]
    assert faults[0].kind == "heartbeat_loss"
    # declared at the first unanswered challenge's response deadline (the
    # interval: one round trip measured so far), 0.24 + 0.25
    assert d.now == pytest.approx(0.49) and d.now <= 2 * 0.25
