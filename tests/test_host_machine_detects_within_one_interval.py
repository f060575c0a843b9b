"""The host machine's detection rule, edge by edge, with a fake clock: a
response deadline per challenge that follows the measured round trip, a
hang declared at the first unanswered challenge, and no false alarm when
the guest (or the agent) could not run: the deadline is extended, bounded,
and a guest starved by its own evidence is reported Starved, not failed."""
from __future__ import annotations

from typing import List, Optional

import pytest
from test_host_machine_edges import Drive, kinds, response

from nfvha.protocol import host
from nfvha.protocol.host import (
    Connected,
    CpuSample,
    Disconnected,
    Fault,
    HostConfig,
    Received,
    Send,
    Starved,
    StateChanged,
    Tick,
)

INTERVAL = 0.1
IDLE = CpuSample(run_ns=0, wait_ns=0)  # a guest that does not want a CPU (hung, idle)


class Rig(Drive):
    """Drive with a guest CPU model: `cpu` gives the sample at a time."""

    def __init__(self, config: HostConfig = HostConfig(), **kw: object) -> None:
        super().__init__(config, **kw)
        self.cpu = lambda t: IDLE
        self.lag_ms = 0.0

    def tick(self, at: float) -> list:
        sample = self.cpu(at) if host.wants_sample(self.state, at) else None
        return self.feed(Tick(sample=sample, lag_ms=self.lag_ms), at=at)

    def run_until(self, t: float) -> list:
        outputs = []
        while self.deadline is not None and self.deadline <= t:
            outputs += self.tick(max(self.deadline, self.now))
        self.now = max(self.now, t)
        return outputs

    def warm(self, rtt: float = 0.002, answers: int = 5) -> Rig:
        """Registered at 100 ms and answered `answers` times in `rtt`."""
        self.registered(interval_ms=100)
        for _ in range(answers):
            self.answer(at=self.now + rtt)
            self.run_until(self.state.deadline)
        return self


def starving(share: float) -> object:
    """A guest process that waits for a CPU `share` of the time and runs little."""
    return lambda t: CpuSample(run_ns=int(t * 1e7), wait_ns=int(t * share * 1e9))


def test_the_response_deadline_follows_the_round_trip_down_to_its_floor() -> None:
    r = Rig()
    r.registered(interval_ms=100)
    assert host.response_timeout_ms(r.state) == 100.0  # nothing measured yet: the interval
    r.answer(at=0.002)
    r.run_until(r.state.deadline)
    r.answer(at=r.now + 0.002)
    r.run_until(r.state.deadline)
    assert host.response_timeout_ms(r.state) == 100.0  # still learning
    r.answer(at=r.now + 0.002)
    r.run_until(r.state.deadline)
    assert host.response_timeout_ms(r.state) == pytest.approx(20.0)  # 2 ms rtt: the floor
    assert r.state.respond_by - r.state.challenged_at == pytest.approx(0.020)


def test_a_hang_is_declared_at_the_first_unanswered_challenges_deadline() -> None:
    r = Rig().warm()
    sent = r.state.challenged_at
    out = r.run_until(sent + 0.0199)
    assert kinds(out, Fault) == []
    out = r.run_until(sent + 0.020)
    (fault,) = kinds(out, Fault)
    assert fault.kind == "heartbeat_loss" and r.now - sent == pytest.approx(0.020)
    assert [s.state for s in kinds(out, StateChanged)] == ["failed"]


def test_an_answer_just_before_the_deadline_counts_just_after_it_is_a_miss() -> None:
    r = Rig().warm()
    sent = r.state.challenged_at
    assert kinds(r.answer(at=sent + 0.0199), Fault) == []
    assert kinds(r.run_until(r.state.deadline), Fault) == []
    assert r.state.phase == "enabled"
    r2 = Rig().warm()
    sent = r2.state.challenged_at
    out = r2.run_until(sent + 0.0201)
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]
    r2.answer(at=sent + 0.021)  # alive after all: one answer does not re-enable yet
    assert r2.state.phase == "failed"


def test_a_round_trip_that_grows_slowly_raises_the_deadline_without_a_false_alarm() -> None:
    r = Rig().warm()
    faults = []
    for i in range(80):  # 2 ms -> 82 ms, 1 ms more per challenge
        rtt = 0.002 + i * 0.001
        faults += kinds(r.run_until(r.state.challenged_at + rtt - 1e-6), Fault)
        faults += kinds(r.answer(at=r.state.challenged_at + rtt), Fault)
        faults += kinds(r.run_until(r.state.deadline), Fault)
    assert faults == []
    assert host.response_timeout_ms(r.state) > 80.0


def test_a_guest_that_answers_every_other_challenge_gives_one_fault_and_stays_failed() -> None:
    r = Rig().warm()
    faults = []
    for i in range(20):
        if i % 2:
            r.answer(at=r.state.challenged_at + 0.002)
        faults += kinds(r.run_until(r.state.deadline), Fault)
    assert [f.kind for f in faults] == ["heartbeat_loss"]
    assert r.state.phase == "failed"


def test_a_starved_guest_gets_its_deadline_extended_and_no_fault() -> None:
    r = Rig().warm()
    r.cpu = starving(0.9)
    sent = r.state.challenged_at
    out = r.run_until(sent + 0.060)  # well past the 20 ms deadline
    assert kinds(out, Fault) == [] and r.state.extended_ms > 0
    out = r.answer(at=sent + 0.061)
    assert kinds(out, Fault) == [] and r.state.phase == "enabled"


def test_starvation_extends_only_up_to_its_bound_then_reports_starved_not_failed() -> None:
    r = Rig(HostConfig(max_extension_ms=200)).warm()
    r.cpu = starving(0.95)
    sent = r.state.challenged_at
    out: list = []
    while not kinds(out, Starved):
        assert r.now - sent < 1.0
        out += r.tick(r.deadline)
    assert kinds(out, Fault) == []
    (starved,) = kinds(out, Starved)
    assert starved.active and r.state.starved and r.state.phase == "enabled"
    assert r.now - sent == pytest.approx(0.020 + 0.200)  # its deadline + the bound
    out = r.run_until(r.now + 0.5)  # still starved: no fault, no second report
    assert kinds(out, Fault) == [] and kinds(out, Starved) == []
    # the guest gets its CPU back but is hung: the next challenge is a miss
    r.cpu = lambda t: IDLE
    out = r.run_until(r.now + 0.2)
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]


def test_a_spinning_hung_guest_on_a_busy_host_is_declared_at_the_bound_not_starved() -> None:
    r = Rig(HostConfig(max_extension_ms=300)).warm()
    # it waits half the time (the host is busy) but runs the other half: it
    # could have answered, so it is no Starved guest but a hung one
    r.cpu = lambda t: CpuSample(run_ns=int(t * 0.5e9), wait_ns=int(t * 0.5e9))
    sent = r.state.challenged_at
    out = r.run_until(sent + 0.2)
    assert kinds(out, Fault) == [] and r.state.extended_ms > 0  # held back: extended
    out = r.run_until(sent + 0.5)
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]
    assert kinds(out, Starved) == []
    (fault,) = kinds(out, Fault)
    assert "waited for a CPU 50% and ran 50%" in fault.detail


def test_host_pressure_alone_extends_but_never_reports_starved() -> None:
    r = Rig(HostConfig(max_extension_ms=200)).warm()
    r.cpu = lambda t: CpuSample(0, int(t * 0.9e9), own=False)  # PSI: the host is busy
    sent = r.state.challenged_at
    out = r.run_until(sent + 0.1)
    assert kinds(out, Fault) == [] and r.state.extended_ms > 0
    out = []
    while not kinds(out, Fault):
        out += r.tick(r.deadline)
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]
    # at the bound, which for host-wide evidence is one interval (100 ms)
    assert r.now - sent == pytest.approx(0.020 + 0.100)
    assert kinds(out, Starved) == [] and not r.state.starved


def test_an_agent_that_ran_late_gets_one_extension_to_read_the_answer() -> None:
    r = Rig().warm()
    sent = r.state.challenged_at
    r.lag_ms = 40.0  # the loop was busy: the answer may be waiting unread
    out = r.run_until(sent + 0.021)
    assert kinds(out, Fault) == [] and r.state.lag_extended
    assert kinds(r.answer(at=sent + 0.030), Fault) == []
    # late again on the next challenge, and the guest is hung: one extension, then the miss
    r.run_until(r.state.deadline)
    sent, rto = r.state.challenged_at, host.response_timeout_ms(r.state) / 1000.0
    out = []
    while not kinds(out, Fault):
        out += r.tick(r.deadline)
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]
    assert r.now - sent == pytest.approx(2 * rto)


def test_a_guest_answering_only_after_extensions_is_reported_starved_then_cleared() -> None:
    r = Rig().warm()
    r.cpu = starving(0.9)
    seen: List[Starved] = []
    for _ in range(3):  # each answer comes just after its (growing) response deadline
        late = r.state.respond_by + 0.002
        seen += kinds(r.run_until(late), Starved)
        assert r.state.extended_ms > 0
        seen += kinds(r.answer(at=late), Starved)
        r.run_until(r.state.deadline)
    assert [s.active for s in seen] == [True] and r.state.starved
    r.cpu = lambda t: IDLE
    for _ in range(10):
        seen += kinds(r.answer(at=r.state.challenged_at + 0.002), Starved)
        r.run_until(r.state.deadline)
    assert [s.active for s in seen] == [True, False] and not r.state.starved


def test_samples_are_wanted_only_for_an_unanswered_challenge_near_its_deadline() -> None:
    r = Rig().warm()
    sent = r.state.challenged_at
    assert not host.wants_sample(r.state, sent + 0.005)
    assert host.wants_sample(r.state, r.state.probe_at)
    r.answer(at=sent + 0.012)
    assert not host.wants_sample(r.state, sent + 0.020)


@pytest.mark.parametrize("config", [HostConfig(min_response_ms=0),
                                    HostConfig(max_extension_ms=-1),
                                    HostConfig(reenable_after=0)])
def test_invalid_detection_settings_are_refused(config: HostConfig) -> None:
    with pytest.raises(ValueError):
        host.initial(config)


def test_bytes_after_a_disconnect_restart_the_challenges() -> None:
    """A message arriving after Disconnected with no Connected between left
    the old machine "connected" and enabled with no deadline: it never
    challenged again."""
    r = Rig().warm()
    r.feed(Disconnected(), at=r.now + 0.01)
    nonce = r.last_challenge()
    r.feed(Received(response(nonce)), at=r.now + 0.001)
    assert r.state.connected and r.deadline is not None
    before = len([m for m in r.sent if m["msg_type"] == "challenge"])
    out = r.run_until(r.now + 0.5)
    assert len([m for m in r.sent if m["msg_type"] == "challenge"]) > before
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]  # silent since


def test_nonces_come_from_a_keyed_hash_not_a_recoverable_prng() -> None:
    def nonces(seed: int) -> List[int]:
        r = Rig(seed=seed).warm(answers=50)
        return [m["heartbeat_challenge"] for m in r.sent if m["msg_type"] == "challenge"]

    a, b = nonces(1), nonces(2)
    assert a != b and len(set(a)) == len(a)
    assert a == nonces(1)  # deterministic for a given secret (sans-I/O)
    # the LCG the machine used before: each nonce was the top 31 bits of its
    # state, so the next one followed from a few observed ones; not any more
    seed = 1
    old: List[Optional[int]] = []
    for _ in range(len(a)):
        seed = (seed * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        old.append(seed >> 33)
    assert a != old


def test_connected_resets_the_round_trip_judgement_but_not_the_estimate() -> None:
    r = Rig().warm()
    before = host.response_timeout_ms(r.state)
    r.feed(Connected(), at=r.now + 0.01)
    assert not host.wants_sample(r.state, r.now + 1.0) and r.deadline is None
    r.registered(interval_ms=100)
    assert host.response_timeout_ms(r.state) == before
    assert [o for o in kinds(r.run_until(r.now + 0.001), Send)] == []


def test_input_waiting_unread_at_the_deadline_is_read_before_a_miss_is_declared() -> None:
    r = Rig().warm()
    sent = r.state.challenged_at
    r.run_until(r.state.probe_at)
    out = r.feed(Tick(sample=IDLE, unread=True), at=sent + 0.020)
    assert kinds(out, Fault) == [] and r.deadline == pytest.approx(sent + 0.021)
    assert kinds(r.answer(at=sent + 0.0205), Fault) == []  # it was the answer
    assert r.state.phase == "enabled"


def test_unread_input_that_never_becomes_an_answer_still_ends_in_a_miss() -> None:
    r = Rig(HostConfig(max_extension_ms=50)).warm()
    sent = r.state.challenged_at
    out: list = []
    while not kinds(out, Fault):  # garbage keeps arriving, never the answer
        assert r.now - sent < 0.2
        out += r.feed(Tick(sample=IDLE, unread=True), at=r.deadline)
    assert r.now - sent == pytest.approx(0.020 + 0.050)


def test_answers_the_host_held_back_do_not_teach_the_deadline() -> None:
    r = Rig().warm()
    before = host.response_timeout_ms(r.state)
    r.cpu = starving(0.9)
    for _ in range(5):  # every answer comes 60 ms late, after extensions
        sent = r.state.challenged_at
        r.run_until(sent + 0.060)
        r.answer(at=sent + 0.060)
        r.run_until(r.state.deadline)
    assert host.response_timeout_ms(r.state) == before


def test_a_wait_under_way_counts_only_if_seen_at_both_ends_of_the_window() -> None:
    """The kernel adds a wait to schedstat when it ends, so a guest waiting
    right now shows as runnable; one runnable instant alone (an idle VM's
    thread woken by a timer) is no evidence."""
    waiting = CpuSample(run_ns=0, wait_ns=0, runnable=True)
    r = Rig().warm()
    r.cpu = lambda t: waiting
    out = r.run_until(r.state.challenged_at + 0.021)
    assert kinds(out, Fault) == [] and r.state.extended_ms > 0
    r2 = Rig().warm()
    sent = r2.state.challenged_at
    r2.run_until(r2.state.probe_at)  # idle when the window opens
    out = r2.feed(Tick(sample=waiting), at=sent + 0.020)  # runnable at the deadline only
    assert [f.kind for f in kinds(out, Fault)] == ["heartbeat_loss"]


def test_an_answer_spanning_a_hang_does_not_blow_up_the_deadline() -> None:
    r = Rig().warm()
    sent = r.state.challenged_at
    r.run_until(sent + 0.021)  # the guest hung: a miss
    r.answer(at=sent + 0.095)  # it resumes: a 95 ms round trip, the hang's, not the channel's
    assert host.response_timeout_ms(r.state) < 50.0  # learnt as 40 ms: not the interval
    for _ in range(12):
        r.run_until(r.state.deadline)
        r.answer(at=r.state.challenged_at + 0.002)
    assert host.response_timeout_ms(r.state) < 25.0  # and back near the floor


def test_a_round_trip_that_jumps_and_stays_is_learnt_in_a_few_challenges() -> None:
    r = Rig().warm()
    faults = []
    for _ in range(8):  # the channel now takes 60 ms, no evidence of starvation
        sent = r.state.challenged_at
        faults += kinds(r.run_until(sent + 0.060 - 1e-6), Fault)
        r.answer(at=sent + 0.060)
        r.run_until(r.state.deadline)
    assert host.response_timeout_ms(r.state) > 60.0  # followed
    assert len(faults) == 1  # the jump itself was one miss, then it is tracked
