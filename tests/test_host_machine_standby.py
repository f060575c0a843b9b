"""Host heartbeat machine, ``Standby``: the host acts on the VM (reset,
destroy) or knows why it goes away, so the silence and the channel loss
that follow are no fault; the guest's next init enables it again."""
from __future__ import annotations

from nfvha.protocol.host import (
    DISABLED,
    ENABLED,
    Disconnected,
    Fault,
    HostConfig,
    Received,
    Standby,
    StateChanged,
)
from tests.test_host_machine_edges import Drive, init_msg, kinds


def test_standby_of_an_enabled_guest_disables_without_fault_and_stops_challenging() -> None:
    d = Drive().registered(interval_ms=100)
    out = d.feed(Standby("reset by nfvha"), at=0.05)
    assert d.state.phase == DISABLED and d.deadline is None
    assert [s.state for s in kinds(out, StateChanged)] == [DISABLED]
    assert kinds(out, Fault) == []
    sent = len(d.sent)
    # silence for many intervals, then the channel goes: still nothing
    assert kinds(d.run_until(5.0), Fault) == [] and len(d.sent) == sent
    assert kinds(d.feed(Disconnected(), at=5.1), Fault) == []


def test_standby_of_a_failed_guest_ends_the_failure_and_a_new_init_enables() -> None:
    d = Drive(HostConfig(failure_threshold=2)).registered(interval_ms=100)
    faults = kinds(d.run_until(1.0), Fault)
    assert [f.kind for f in faults] == ["heartbeat_loss"]
    d.feed(Standby("reset by nfvha"), at=1.0)
    assert d.state.phase == DISABLED
    out = d.feed(Received(init_msg(invocation_id=12, interval_ms=100)), at=6.0)
    assert d.state.phase == ENABLED and kinds(out, Fault) == []
    assert d.sent[-1]["msg_type"] == "challenge"


def test_standby_while_waiting_changes_nothing() -> None:
    d = Drive()
    d.feed(Standby("destroy"))
    before = d.state
    out = d.feed(Standby("destroy"), at=1.0)
    assert d.state == before and out == []
