"""Discovery: the agent picks up sockets that appear after it started,
reconnects when the QEMU side closes and comes back, and forgets sockets
that disappear. Fake guests: simulated QEMU chardev servers (simguest)."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import until

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.simguest import Simulator


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    # UNIX socket paths are limited to 107 bytes; pytest's tmp_path is too long.
    d = tempfile.mkdtemp(prefix="nfvha-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


class Controller:
    def __init__(self) -> None:
        self.hellos: list[dict] = []
        self.states: list[dict] = []
        self.faults: list[dict] = []

    async def hello(self, host: str, instances: list[dict], agent_started_at=None) -> None:
        self.hellos.append({"host": host, "instances": instances})

    async def instance_state(self, **kwargs: object) -> None:
        self.states.append(dict(kwargs))

    async def fault(self, event: dict) -> dict:
        self.faults.append(event)
        return {"ok": True, "id": event["id"]}


async def test_socket_found_after_start_and_reconnected_after_qemu_restart(
        tmp_path: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    ctl = Controller()
    await bus.serve_controller(ctl)
    # one instance exists before the agent starts
    sim = Simulator(tmp_path, 1, "normal", 100)
    (first,) = await sim.start()
    agent = ComputeAgent("host-a", tmp_path, bus, scan_interval_s=0.05)
    await agent.start()
    try:
        await until(lambda: agent.sessions.get(first) is not None
                    and agent.sessions[first].state.phase == "enabled")
        await until(lambda: bool(ctl.hellos))
        assert ctl.hellos[0]["host"] == "host-a"
        assert [i["instance_uuid"] for i in ctl.hellos[0]["instances"]] == [first]

        # a second instance appears later
        (second,) = await sim.start(["0f0e0d0c-0b0a-4090-8070-605040302010"])
        await until(lambda: second in agent.sessions
                    and agent.sessions[second].state.phase == "enabled")

        # QEMU of the first goes away (connection closed, socket removed) ...
        await sim.close(first)
        await until(lambda: any(f["instance_uuid"] == first and f["kind"] == "channel_lost"
                                for f in ctl.faults))
        await until(lambda: first not in agent.sessions)  # forgotten
        # ... and comes back under the same path: found, connected, registered
        await sim.start([first])
        await until(lambda: first in agent.sessions
                    and agent.sessions[first].state.phase == "enabled")
        enabled = [s for s in ctl.states if s["instance_uuid"] == first
                   and s["state"] == "enabled"]
        assert len(enabled) >= 2  # before and after the restart
        # the neighbour never noticed
        assert not [f for f in ctl.faults if f["instance_uuid"] == second]
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


async def test_reconnects_when_qemu_drops_the_connection_but_keeps_listening(
        tmp_path: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    ctl = Controller()
    await bus.serve_controller(ctl)
    sim = Simulator(tmp_path, 1, "normal", 100)
    (u,) = await sim.start()
    agent = ComputeAgent("host-a", tmp_path, bus, scan_interval_s=0.05)
    await agent.start()
    try:
        await until(lambda: u in agent.sessions and agent.sessions[u].state.phase == "enabled")
        guest = sim.guests[u]
        assert guest.transport is not None
        guest.transport.close()  # the socket file stays, QEMU still listens
        await until(lambda: agent.sessions[u].counters["connects"] == 2)
        await until(lambda: agent.sessions[u].state.phase == "enabled")
        assert [f["kind"] for f in ctl.faults] == ["channel_lost"]
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


async def test_stale_socket_file_is_retried_and_ignored_files_are_skipped(
        tmp_path: Path) -> None:
    import socket

    bus = make_bus("inproc://")
    await bus.start()
    await bus.serve_controller(Controller())
    # a socket file nobody listens on (QEMU died; libvirt left it behind)
    stale = tmp_path / "cgcs.heartbeat.11111111-2222-4333-8444-555555555555.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    (tmp_path / "cgcs.heartbeat.22222222-2222-4333-8444-555555555555.sock").write_text("x")
    (tmp_path / "unrelated.sock").write_text("")
    agent = ComputeAgent("host-a", tmp_path, bus, scan_interval_s=0.05)
    await agent.start()
    try:
        assert list(agent.sessions) == ["11111111-2222-4333-8444-555555555555"]
        sess = agent.sessions["11111111-2222-4333-8444-555555555555"]
        await until(lambda: sess.connect_failures >= 2)
        assert sess.transport is None
        os.unlink(stale)
        await until(lambda: not agent.sessions)
    finally:
        await agent.stop()
        await bus.stop()
