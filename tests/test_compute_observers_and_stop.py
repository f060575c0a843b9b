"""Observers see every machine output with a monotonic time; a failing
observer costs nothing; stopping the agent reports no fault; a guest's
exit is no alarm; casts reach the controller in the order they happened."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import until

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.simguest import Simulator
from nfvha.protocol import host as hostsm


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = tempfile.mkdtemp(prefix="nfvha-", dir="/tmp")  # short: UNIX paths <= 107 bytes
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


class Controller:
    def __init__(self) -> None:
        self.states: list[dict] = []
        self.faults: list[dict] = []

    async def hello(self, host: str, instances: list[dict], agent_started_at=None) -> None:
        pass

    async def instance_state(self, **kwargs: Any) -> None:
        self.states.append(dict(kwargs))

    async def fault(self, event: dict) -> dict:
        self.faults.append(event)
        return {"ok": True, "id": event["id"]}


async def test_observers_stop_and_exit(sockdir: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    ctl = Controller()
    await bus.serve_controller(ctl)
    sim = Simulator(sockdir, 1, "normal", 100)
    (u,) = await sim.start()
    agent = ComputeAgent("host-a", sockdir, bus)
    seen: list[tuple[str, Any, float]] = []

    def broken(instance_uuid: str, output: Any, mono: float) -> None:
        raise RuntimeError("observer bug")

    agent.add_observer(broken)
    agent.add_observer(lambda i, o, m: seen.append((i, o, m)))
    before = time.monotonic()
    await agent.start()
    try:
        await until(lambda: sum(isinstance(o, hostsm.RoundTrip) for _, o, _ in seen) >= 5)
        kinds = {type(o).__name__ for _, o, _ in seen}
        assert {"StateChanged", "Send", "RoundTrip"} <= kinds
        monos = [m for _, _, m in seen]
        assert monos == sorted(monos) and before <= monos[0] <= time.monotonic()
        assert all(i == u for i, _, _ in seen)
        assert agent.counters["observer_errors"] >= len(seen)  # the broken one, each time
        assert agent.sessions[u].state.phase == "enabled"  # unharmed by it

        # the guest exits cleanly: disabled, no alarm
        guest = sim.guests[u]
        guest.send(guest._msg("exit", log_msg="shutting down"))
        await until(lambda: agent.sessions[u].state.phase == "disabled")
        await asyncio.sleep(0.35)  # more than two intervals: no miss counted
        assert ctl.faults == []
        # states reached the controller in the order they happened
        await until(lambda: ctl.states and ctl.states[-1]["state"] == "disabled")
        order = [s["state"] for s in ctl.states]
        assert order[0] == "waiting" and order[-1] == "disabled" and "enabled" in order
        assert all(s["host"] == "host-a" and s["instance_uuid"] == u for s in ctl.states)
        assert [s["at"] for s in ctl.states] == sorted(s["at"] for s in ctl.states)
    finally:
        await agent.stop()
    # stopping closed the channel without a channel_lost fault
    await asyncio.sleep(0.1)
    assert ctl.faults == []
    await sim.stop()
    await bus.stop()
