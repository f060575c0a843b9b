"""The compute agent's ``recover`` endpoint (the controller's recovery sink
asks; the instance source acts): the session is put on standby first, so
the silence and the channel loss the action causes are no fault; one
action per action id (a repeat, even while the first runs, gets the first
result); bad input is refused with a clear answer, never an exception; the
result goes back to the asking controller as ``recovery_result``."""
from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import StubController, until

from nfvha.bus import make_bus
from nfvha.compute.agent import RECOVERIES_KEPT, AgentEndpoint, ComputeAgent
from nfvha.compute.simguest import Simulator
from nfvha.compute.sources.directory import DirectorySource
from nfvha.controller.timeutil import parse_utc


class ResettingSource(DirectorySource):
    """The directory's channels; a reset silences the guest (as a reboot
    does) and takes a while."""

    name = "resetting"
    can_recover = True

    def __init__(self, directory: Path, sim: Simulator | None = None) -> None:
        super().__init__(directory, scan_interval_s=0.05)
        self.sim = sim
        self.calls: list[tuple[str, str]] = []

    async def recover(self, uuid: str, action: str) -> tuple[bool, str]:
        self.calls.append((uuid, action))
        if self.sim is not None:
            self.sim.hang(uuid, True)
        await asyncio.sleep(0.3)
        return True, f"{action} done"


async def _world(sock_dir: Path, source: DirectorySource | None = None, guests: int = 0):
    bus = make_bus("inproc://")
    await bus.start()
    ctl = StubController()
    await bus.serve_controller(ctl)
    sim = Simulator(sock_dir, guests, "normal", 200)
    uuids = await sim.start() if guests else []
    if isinstance(source, ResettingSource):
        source.sim = sim
    agent = ComputeAgent("host-a", sock_dir, bus, source=source, sync_interval_s=0)
    await agent.start()
    return bus, ctl, sim, uuids, agent


async def test_recovery_puts_the_guest_on_standby_and_is_carried_out_once(
        sock_dir: Path) -> None:
    source = ResettingSource(sock_dir)
    bus, ctl, sim, (target, control), agent = await _world(sock_dir, source, guests=2)
    try:
        await until(lambda: len(agent.sessions) == 2 and all(
            s.state.phase == "enabled" for s in agent.sessions.values()))
        args = {"action_id": "ev-1", "reply_to": "ctl-1", "instance_uuid": target.upper(),
                "action": "reset"}
        before = len(ctl.faults)  # (a loaded machine may have flagged a late answer)
        await bus.cast_compute("host-a", "recover", **args)
        await bus.cast_compute("host-a", "recover", **args)  # while the first still runs
        sim.hang(control, True)  # the control guest goes silent with nobody acting on it
        await until(lambda: len(ctl.results) == 2)
        assert source.calls == [(target, "reset")]
        first, second = ctl.results
        assert first == second
        assert first["action_id"] == "ev-1" and first["host"] == "host-a"
        assert first["instance_uuid"] == target.upper()
        assert first["ok"] is True and first["detail"] == "reset done"
        parse_utc(first["done_at"])

        await asyncio.sleep(1.0)  # five intervals of silence from both guests
        assert agent.sessions[target].state.phase == "disabled"
        # the reboot's end: QEMU's side of the channel goes away too
        await sim.close(target)
        await asyncio.sleep(0.3)
        assert [(f["instance_uuid"], f["kind"]) for f in ctl.faults[before:]] == [
            (control, "heartbeat_loss")]

        # asked again later (a controller that died between asking and recording)
        await bus.cast_compute("host-a", "recover", **args)
        await until(lambda: len(ctl.results) == 3)
        assert ctl.results[2] == first and len(source.calls) == 1
        assert agent.counters["recoveries"] == 1 and agent.counters["recoveries_repeated"] == 2
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


async def test_bad_recovery_requests_are_refused_without_acting(sock_dir: Path) -> None:
    source = ResettingSource(sock_dir)
    bus, ctl, sim, _, agent = await _world(sock_dir, source)
    endpoint = AgentEndpoint(agent)
    u = "0f0e0d0c-0b0a-4090-8070-605040302010"
    answerable = [  # action id and reply_to usable: the refusal is also sent back
        {"action_id": "a1", "reply_to": "ctl-1", "instance_uuid": u, "action": "reboot"},
        {"action_id": "a2", "reply_to": "ctl-1", "instance_uuid": u, "action": None},
        {"action_id": "a3", "reply_to": "ctl-1", "instance_uuid": 7, "action": "reset"},
        {"action_id": "a4", "reply_to": "ctl-1", "instance_uuid": "", "action": "destroy"},
        {"action_id": "a5", "reply_to": "ctl-1", "instance_uuid": "x" * 300, "action": "reset"},
        {"action_id": "a6", "reply_to": "ctl-1", "instance_uuid": u, "action": ["reset"]},
        {"action_id": "a8", "reply_to": "ctl-1"},
    ]
    unanswerable = [
        {"action_id": 5, "reply_to": "ctl-1", "instance_uuid": u, "action": "reset"},
        {"action_id": "", "reply_to": "ctl-1", "instance_uuid": u, "action": "reset"},
        {"action_id": "b1", "reply_to": None, "instance_uuid": u, "action": "reset"},
        {"action_id": "b2", "reply_to": {"x": 1}, "instance_uuid": u, "action": "reset"},
        {"action_id": "x" * 300, "reply_to": "ctl-1", "instance_uuid": u, "action": "reset"},
        {},
    ]
    try:
        for args in answerable + unanswerable:
            res = await endpoint.recover(**args)
            assert res["ok"] is False and res["error"], args
        # over the bus too, with a field the endpoint does not know
        await bus.cast_compute("host-a", "recover", action_id="a7", reply_to="ctl-1",
                               instance_uuid=u, action="explode", colour="red")
        await until(lambda: len(ctl.results) == len(answerable) + 1)
        await asyncio.sleep(0.2)
        assert len(ctl.results) == len(answerable) + 1
        assert sorted(r["action_id"] for r in ctl.results) == [
            "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"]
        assert all(r["ok"] is False and r["detail"] for r in ctl.results)
        assert {r["instance_uuid"] for r in ctl.results} == {u, ""}  # junk is not echoed
        assert source.calls == []
        assert agent.counters["recoveries_refused"] == len(answerable + unanswerable) + 1
        # a refusal is not remembered: the same id asked properly is carried out
        res = await endpoint.recover(action_id="a1", reply_to="ctl-1", instance_uuid=u,
                                     action="destroy")
        assert res == {"ok": True, "duplicate": False}
        await until(lambda: len(ctl.results) == len(answerable) + 2)
        assert source.calls == [(u, "destroy")] and ctl.results[-1]["ok"] is True
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


async def test_the_last_1024_action_ids_are_remembered(sock_dir: Path) -> None:
    class Quick(DirectorySource):
        can_recover = True
        calls = 0

        async def recover(self, uuid: str, action: str) -> tuple[bool, str]:
            Quick.calls += 1
            return True, f"call {Quick.calls}"

    bus, ctl, sim, _, agent = await _world(sock_dir, Quick(sock_dir))
    u = "0f0e0d0c-0b0a-4090-8070-605040302010"
    try:
        for i in range(RECOVERIES_KEPT + 1):
            agent.recover(f"id-{i}", "ctl-1", u, "reset")
        await until(lambda: len(ctl.results) == RECOVERIES_KEPT + 1)
        assert Quick.calls == RECOVERIES_KEPT + 1
        agent.recover(f"id-{RECOVERIES_KEPT}", "ctl-1", u, "reset")  # remembered
        agent.recover("id-1", "ctl-1", u, "reset")                    # the oldest kept
        await until(lambda: len(ctl.results) == RECOVERIES_KEPT + 3)
        assert Quick.calls == RECOVERIES_KEPT + 1
        agent.recover("id-0", "ctl-1", u, "reset")                    # forgotten: acts again
        await until(lambda: len(ctl.results) == RECOVERIES_KEPT + 4)
        assert Quick.calls == RECOVERIES_KEPT + 2
        assert ctl.results[-1]["detail"] == f"call {RECOVERIES_KEPT + 2}"
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


async def test_a_host_without_libvirt_answers_that_it_cannot(sock_dir: Path) -> None:
    bus, ctl, sim, (u,), agent = await _world(sock_dir, None, guests=1)
    try:
        await until(lambda: u in agent.sessions and agent.sessions[u].state.phase == "enabled")
        await bus.cast_compute("host-a", "recover", action_id="ev-9", reply_to="ctl-1",
                               instance_uuid=u, action="reset")
        await until(lambda: len(ctl.results) == 1)
        assert ctl.results[0]["ok"] is False
        assert ctl.results[0]["detail"] == "no libvirt on this host"
        # refused before anything happened: the guest is still monitored
        assert agent.sessions[u].state.phase == "enabled"
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()
