"""host_down events go the way of every fault: stored first, one delivery
per sink, and the same ids from every controller that sees the host die
(two controllers on one store report each VM once)."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import until

from nfvha.controller.hostfailure import DOWN, UP, HostDownRules, HostFailureMonitor
from nfvha.controller.service import Controller


class FakeProbe:
    name = "probe"

    def __init__(self, verdict: str) -> None:
        self.verdict = verdict
        self.asked: list[str] = []

    async def check(self, address: str) -> tuple[str, str]:
        self.asked.append(address)
        return self.verdict, f"{address} said {self.verdict}"


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []

    async def deliver(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def _monitor(c: Controller, probe: FakeProbe,
             addresses: dict[str, str] | None = None) -> HostFailureMonitor:
    async def instances_of(host: str) -> list[dict[str, Any]]:
        return [i for i in await c.list_instances() if i["host"] == host]

    return HostFailureMonitor(HostDownRules(recheck_interval_s=0.2), probe=probe,
                              addresses=addresses, instances_of=instances_of, emit=c.emit,
                              liveness=c.hosts)


def _vms(n: int, action: str = "reboot") -> list[dict[str, Any]]:
    return [{"uuid": str(uuid.uuid4()), "state": "enabled", "health": "healthy",
             "interval_ms": 100, "corrective_action": action} for _ in range(n)]


async def test_host_down_reaches_every_sink_once_per_vm_from_two_controllers(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    sinks_a, sinks_b = [Recorder("log"), Recorder("hook")], [Recorder("log"), Recorder("hook")]
    a = Controller(db, sinks_a, agent_down_after_s=0.3, controller_id="a")
    b = Controller(db, sinks_b, agent_down_after_s=0.3, controller_id="b")
    await a.start()
    try:
        a.host_failure = _monitor(a, FakeProbe(DOWN))
        vms = _vms(10)
        await a.hello("c1", vms, "2026-12-02T10:00:00.000000+00:00")
        # a hears the agent (and its address); b starts later, never hears it,
        # and knows the host from the store and its address from its config
        await a.alive("c1", "2026-12-02T10:00:00.000000+00:00", 10, None, "10.9.9.9")
        await b.start()
        b.host_failure = _monitor(b, FakeProbe(DOWN), {"c1": "10.9.9.9"})

        def delivered() -> set[tuple[str, str]]:
            return {(s.name, e["id"]) for s in sinks_a + sinks_b for e in s.events}

        await until(lambda: len(delivered()) == 20, 10)
        await until(lambda: b.hosts is not None and b.hosts.hosts["c1"].host_failure
                    == "host_down", 10)
        await b.wait_idle(10)
        events = [e for s in sinks_a + sinks_b for e in s.events]
        assert {e["kind"] for e in events} == {"host_down"}
        assert {e["instance_uuid"] for e in events} == {v["uuid"] for v in vms}
        assert {e["corrective_action"] for e in events} == {"reboot"}
        assert len(events) == 20            # 10 VMs x 2 sinks, not twice from b
        stored = [e for e in await a.list_events() if e["kind"] == "host_down"]
        assert len(stored) == 10
        [host] = [h for h in await a.list_hosts() if h["host"] == "c1"]
        assert (host["state"], host["host_failure"], host["management_address"]) == (
            "silent", "host_down", "10.9.9.9")
    finally:
        await a.stop()
        await b.stop()


async def test_a_silent_agent_on_a_host_that_answers_raises_no_fault(tmp_path: Path) -> None:
    sink = Recorder("log")
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [sink], agent_down_after_s=0.3)
    await c.start()
    try:
        probe = FakeProbe(UP)
        c.host_failure = _monitor(c, probe)
        await c.hello("c1", _vms(3))
        await c.alive("c1", "t0", 3, None, "10.9.9.9")
        await until(lambda: len(probe.asked) >= 3, 10)    # checked again while silent
        [host] = await c.list_hosts()
        assert (host["state"], host["host_failure"]) == ("silent", "agent_only")
        assert sink.events == [] and await c.list_events() == []
        # the agent is back: no longer asked about
        await c.alive("c1", "t1", 3, None, "10.9.9.9")
        [host] = await c.list_hosts()
        assert (host["state"], host["host_failure"]) == ("up", None)
    finally:
        await c.stop()


async def test_a_host_with_no_second_signal_is_never_down(tmp_path: Path) -> None:
    sink = Recorder("log")
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [sink], agent_down_after_s=0.2)
    await c.start()
    try:
        probe = FakeProbe(DOWN)
        c.host_failure = _monitor(c, probe)
        await c.hello("c1", _vms(3))
        await c.alive("c1", "t0", 3)                      # no management address
        await until(lambda: c.hosts is not None and c.hosts.state("c1") == "silent", 5)
        [host] = await c.list_hosts()
        assert host["host_failure"] == "agent_only" and "no second signal" in \
            host["host_failure_reason"]
        assert probe.asked == [] and sink.events == []
    finally:
        await c.stop()


async def test_alive_refuses_a_management_address_that_is_not_short_text(
        tmp_path: Path) -> None:
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], agent_down_after_s=1)
    await c.start()
    try:
        assert not (await c.alive("c1", None, 0, None, "x" * 256))["ok"]
        assert not (await c.alive("c1", None, 0, None, ["10.0.0.1"]))["ok"]
        assert (await c.alive("c1", None, 0, None, "10.0.0.1"))["ok"]
    finally:
        await c.stop()


@pytest.mark.parametrize("fresh, want", [(False, "host_down"), (True, "agent_only")])
async def test_nova_still_calling_the_service_up_is_life_only_if_it_reported_since(
        tmp_path: Path, fresh: bool, want: str) -> None:
    """The probe says down; Nova still lists nova-compute up: a report older
    than the agent's last word tells nothing (Nova keeps a dead service up
    for its service_down_time), one after it means the host lives."""
    from datetime import timedelta

    from nfvha.controller.hostfailure import nova_verdict

    class Nova:
        def __init__(self) -> None:
            self.updated: Any = None
            self.since: list[Any] = []

        async def check(self, host: str, since: Any = None) -> tuple[str, str]:
            self.since.append(since)
            return nova_verdict(host, [{"host": host, "state": "up",
                                        "updated_at": self.updated}], since)

        async def aclose(self) -> None:
            pass

    sink = Recorder("log")
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [sink], agent_down_after_s=0.3)
    await c.start()
    try:
        nova = Nova()
        mon = _monitor(c, FakeProbe(DOWN))
        mon.nova = nova  # type: ignore[assignment]
        c.host_failure = mon
        await c.hello("c1", _vms(2))
        await c.alive("c1", "t0", 2, None, "10.9.9.9")
        assert c.hosts is not None
        last = c.hosts.hosts["c1"].last_seen_at
        assert last is not None
        nova.updated = (last + timedelta(seconds=5 if fresh else -5)).isoformat()
        await until(lambda: c.hosts.hosts["c1"].host_failure == want, 10)
        assert nova.since[0] == last
        if fresh:
            assert await c.list_events() == [] and sink.events == []
        else:
            await until(lambda: len(sink.events) == 2, 10)
    finally:
        await c.stop()
