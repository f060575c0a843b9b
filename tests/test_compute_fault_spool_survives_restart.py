"""A compute agent restarted while the controller is unreachable loses no
fault: the old agent's spool is resent, with the same event id, by the new one."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import until

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.outbox import FaultOutbox
from nfvha.compute.simguest import Simulator


class Controller:
    def __init__(self) -> None:
        self.faults: list[dict] = []

    async def hello(self, host: str, instances: list[dict], agent_started_at=None) -> None:
        pass

    async def instance_state(self, **kwargs: object) -> None:
        pass

    async def fault(self, event: dict) -> dict:
        self.faults.append(event)
        return {"ok": True, "id": event["id"]}


def _agent(sockdir: Path, bus, spool: Path) -> ComputeAgent:
    agent = ComputeAgent("host-a", sockdir, bus, spool_dir=spool)
    agent.outbox = FaultOutbox(agent._deliver_fault, backoff_base_s=0.02, backoff_max_s=0.1,
                               spool_dir=spool)
    return agent


async def test_fault_pending_at_stop_is_resent_by_the_next_agent(sock_dir: Path) -> None:
    spool = sock_dir / "spool"
    instances = sock_dir / "inst"
    instances.mkdir()
    bus = make_bus("inproc://")
    await bus.start()
    sim = Simulator(instances, 1, "normal", 100)
    (u,) = await sim.start()
    agent = _agent(instances, bus, spool)
    await agent.start()
    try:
        await until(lambda: u in agent.sessions and agent.sessions[u].state.phase == "enabled")
        sim.hang(u, True)
        await until(lambda: agent.counters["faults"] == 1)
        await until(lambda: agent.outbox.attempts >= 2)  # no controller: retrying
        (event,) = agent.outbox.pending_events()
        spooled = json.loads((spool / f"{event['id']}.json").read_text())
        assert spooled == event
    finally:
        await agent.stop()
    assert (spool / f"{event['id']}.json").exists()  # kept for the next start

    sim.hang(u, False)
    ctl = Controller()
    await bus.serve_controller(ctl)
    agent2 = _agent(instances, bus, spool)
    await agent2.start()
    try:
        await until(lambda: any(f["id"] == event["id"] for f in ctl.faults))
        got = next(f for f in ctl.faults if f["id"] == event["id"])
        assert got["kind"] == "heartbeat_loss" and got["instance_uuid"] == u
        await until(lambda: not (spool / f"{event['id']}.json").exists())
    finally:
        await agent2.stop()
        await sim.stop()
        await bus.stop()
    assert not spool.exists()  # nothing owed: the empty spool is removed


async def test_unreadable_spool_file_is_set_aside_not_fatal(sock_dir: Path) -> None:
    spool = sock_dir / "spool"
    spool.mkdir()
    (spool / "junk.json").write_text("{not json")
    (spool / "other.json").write_text(json.dumps({"id": "mismatch"}))
    bus = make_bus("inproc://")
    await bus.start()
    agent = _agent(sock_dir, bus, spool)
    await agent.start()
    try:
        assert agent.outbox.pending == 0
        assert sorted(p.name for p in spool.iterdir()) == ["junk.bad", "other.bad"]
    finally:
        await agent.stop()
        await bus.stop()
