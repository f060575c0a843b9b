"""A caller that runs a tick late does not move the guest's phase: the next
challenge is due an interval after the one just served was due (so guests
whose challenges left in one late batch do not stay bunched together), and
only a tick an interval or more late, or an early re-phasing tick, starts
the rhythm again from now."""
from __future__ import annotations

from nfvha.protocol import heartbeat as hb
from nfvha.protocol import host


def registered(interval_ms: int = 100) -> tuple[host.HostState, float]:
    state = host.initial(host.HostConfig(), nonce_seed=1)
    state, _, _ = host.step(state, host.Connected(), 10.0)
    init = hb.build_init(sequence=1, invocation_id=1, name="vm", corrective_action="reboot",
                         heartbeat_interval_ms=interval_ms)
    state, _, _ = host.step(state, host.Received(init), 10.0)
    return state, 10.0


def answer(state: host.HostState, now: float) -> host.HostState:
    msg = hb.build_challenge_response(sequence=2, heartbeat_response=state.nonce,
                                      heartbeat_health="healthy", corrective_action="reboot")
    state, outputs, _ = host.step(state, host.Received(msg), now)
    assert type(outputs[0]) is host.RoundTrip
    return state


def test_a_late_tick_keeps_the_next_deadline_on_the_rhythm() -> None:
    state, now = registered()
    state = answer(state, now + 0.001)
    due = state.deadline
    assert due == now + 0.1
    state, outputs, _ = host.step(state, host.Tick(), due + 0.004)  # 4 ms late
    assert type(outputs[-1]) is host.Send and state.challenged_at == due + 0.004
    assert state.deadline == due + 0.1  # not due + 0.104


def test_an_interval_late_or_an_early_tick_starts_a_new_rhythm() -> None:
    state, now = registered()
    state = answer(state, now + 0.001)
    due = state.deadline
    late = due + 0.1  # a whole interval late
    state, _, _ = host.step(state, host.Tick(), late)
    assert state.deadline == late + 0.1
    state = answer(state, late + 0.001)
    early = state.deadline - 0.05
    state, outputs, _ = host.step(state, host.Tick(early=True), early)
    assert type(outputs[-1]) is host.Send and state.deadline == early + 0.1
    # an early tick run late names the phase its caller picked: the rhythm starts there
    state = answer(state, early + 0.001)
    picked = state.deadline - 0.06
    state, outputs, _ = host.step(state, host.Tick(early=True, phase=picked), picked + 0.004)
    assert type(outputs[-1]) is host.Send and state.deadline == picked + 0.1
