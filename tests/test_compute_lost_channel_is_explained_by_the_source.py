"""When an enabled guest's heartbeat channel closes, the agent asks its
instance source why before the fault goes out: no fault (the host knows:
shut down, migrated), ``vm_crashed`` (replaces ``channel_lost``, with the
source's detail), or ``channel_lost`` as before — still stamped with the
moment of the loss, however long the source took. The directory source
explains nothing. ``report_fault`` sends a fault no channel reported, with
the guest's registered corrective action."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import StubController, until

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.simguest import Simulator
from nfvha.compute.sources import LossVerdict
from nfvha.compute.sources.directory import DirectorySource


class ExplainingSource(DirectorySource):
    """The directory's channels, with the verdicts a libvirt source would give."""

    name = "explaining"

    def __init__(self, directory: Path, verdicts: dict[str, LossVerdict],
                 delay_s: float = 0.0) -> None:
        super().__init__(directory, scan_interval_s=0.05)
        self.verdicts = verdicts
        self.delay_s = delay_s
        self.asked: list[str] = []

    async def explain_loss(self, uuid: str) -> LossVerdict:
        self.asked.append(uuid)
        await asyncio.sleep(self.delay_s)
        return self.verdicts[uuid]


async def test_the_sources_verdict_decides_what_a_lost_channel_is(sock_dir: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    ctl = StubController()
    await bus.serve_controller(ctl)
    sim = Simulator(sock_dir, 3, "normal", 300)
    shut, crashed, lost = await sim.start()
    source = ExplainingSource(sock_dir, {
        shut: LossVerdict(None, "domain shut down"),
        crashed: LossVerdict("vm_crashed", "domain crashed (QEMU killed by signal 9)"),
        lost: LossVerdict("channel_lost", "ignored: the machine's detail stays")},
        delay_s=0.5)
    agent = ComputeAgent("host-a", sock_dir, bus, source=source)
    seen: list[tuple[str, str, float]] = []
    agent.add_observer(lambda u, o, m: seen.append((u, o.kind, m))
                       if type(o).__name__ == "Fault" else None)
    await agent.start()
    try:
        assert agent.stats()["source"] == "explaining"
        await until(lambda: len(agent.sessions) == 3 and all(
            s.state.phase == "enabled" for s in agent.sessions.values()))
        t0 = time.monotonic()
        for u in (shut, crashed, lost):
            await sim.close(u)
        t1 = time.monotonic()
        # (a loaded machine may add a heartbeat_loss before the close: not what is checked)
        losses = lambda: [f for f in ctl.faults if f["kind"] != "heartbeat_loss"]  # noqa: E731
        await until(lambda: len(losses()) == 2)
        await asyncio.sleep(0.3)
        assert sorted(source.asked) == sorted([shut, crashed, lost])
        by_uuid = {f["instance_uuid"]: f for f in losses()}
        assert set(by_uuid) == {crashed, lost}             # the shut-down one: no fault
        assert by_uuid[crashed]["kind"] == "vm_crashed"
        assert by_uuid[crashed]["detail"] == "domain crashed (QEMU killed by signal 9)"
        assert by_uuid[crashed]["corrective_action"] == "reboot"  # the guest's registration
        assert by_uuid[lost]["kind"] == "channel_lost"
        assert by_uuid[lost]["detail"] != "ignored: the machine's detail stays"
        # stamped when the channel closed, not when the source answered (0.5 s on)
        for f in losses():
            assert t0 <= f["detected_mono"] < t1 + 0.4, f
        assert agent.counters["losses_explained"] == 1 and len(losses()) == 2
        # the controller (and so the server-group peers) never sees the shut
        # down VM "failed": its state goes from enabled to disabled; the others fail
        def states(u: str) -> list[str]:
            return [c["state"] for c in ctl.states if c["instance_uuid"] == u]
        await until(lambda: states(shut)[-1:] == ["disabled"] and all(
            states(u)[-1:] == ["failed"] for u in (crashed, lost)))
        assert "failed" not in states(shut)
        # observers see the faults as they went out
        assert sorted((u, k) for u, k, _ in seen if k != "heartbeat_loss") == sorted(
            [(crashed, "vm_crashed"), (lost, "channel_lost")])
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


async def test_a_source_that_fails_or_hangs_leaves_channel_lost_standing(
        sock_dir: Path, monkeypatch) -> None:
    import nfvha.compute.agent as agentmod

    monkeypatch.setattr(agentmod, "EXPLAIN_TIMEOUT_S", 0.5)

    class Broken(DirectorySource):
        name = "broken"

        async def explain_loss(self, uuid: str) -> LossVerdict:
            if uuid == hangs:
                await asyncio.sleep(3600)
            raise RuntimeError("libvirt connection lost")

    bus = make_bus("inproc://")
    await bus.start()
    ctl = StubController()
    await bus.serve_controller(ctl)
    sim = Simulator(sock_dir, 2, "normal", 100)
    fails, hangs = await sim.start()
    agent = ComputeAgent("host-a", sock_dir, bus,
                         source=Broken(sock_dir, scan_interval_s=0.05))
    await agent.start()
    try:
        await until(lambda: len(agent.sessions) == 2 and all(
            s.state.phase == "enabled" for s in agent.sessions.values()))
        await sim.close(fails)
        await sim.close(hangs)
        await until(lambda: len(ctl.faults) == 2)
        assert sorted((f["instance_uuid"], f["kind"]) for f in ctl.faults) == sorted(
            [(fails, "channel_lost"), (hangs, "channel_lost")])
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


async def test_the_directory_source_explains_nothing_and_cannot_recover(sock_dir: Path) -> None:
    source = DirectorySource(sock_dir)
    t0 = time.monotonic()
    verdict = await source.explain_loss("0f0e0d0c-0b0a-4090-8070-605040302010")
    assert verdict.kind == "channel_lost" and time.monotonic() - t0 < 0.5
    assert await source.recover("0f0e0d0c-0b0a-4090-8070-605040302010", "reset") == (
        False, "no libvirt on this host")


async def test_report_fault_carries_the_registered_corrective_action(sock_dir: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    ctl = StubController()
    await bus.serve_controller(ctl)
    sim = Simulator(sock_dir, 1, "normal", 100)
    (u,) = await sim.start()
    agent = ComputeAgent("host-a", sock_dir, bus, scan_interval_s=0.05)
    await agent.start()
    try:
        await until(lambda: u in agent.sessions and agent.sessions[u].state.phase == "enabled")
        never = "11111111-2222-4333-8444-555555555555"
        first = agent.report_fault(u.upper(), "vm_crashed", "domain crashed")
        agent.pool.report_fault(never, "vm_crashed", "domain crashed at boot")  # a source's way
        await until(lambda: len(ctl.faults) == 2)
        got = {f["instance_uuid"]: f for f in ctl.faults}
        assert got[u]["id"] == first and got[u]["corrective_action"] == "reboot"
        assert got[never]["corrective_action"] == "none"
        assert {f["kind"] for f in ctl.faults} == {"vm_crashed"}
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()
