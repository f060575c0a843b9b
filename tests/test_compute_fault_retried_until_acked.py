"""A fault is called to the controller until it acks: no controller at all,
then a controller that fails, then one that answers. Nothing is lost and the
event keeps its id across retries (the controller deduplicates by it)."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import until

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.outbox import FaultOutbox
from nfvha.compute.simguest import Simulator


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = tempfile.mkdtemp(prefix="nfvha-", dir="/tmp")  # short: UNIX paths <= 107 bytes
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


class FlakyController:
    """Raises for its first `failures` fault calls, then acks."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict] = []

    async def hello(self, host: str, instances: list[dict], agent_started_at=None) -> None:
        pass

    async def instance_state(self, **kwargs: object) -> None:
        pass

    async def fault(self, event: dict) -> dict:
        self.calls.append(event)
        if len(self.calls) <= self.failures:
            raise RuntimeError("database is restarting")
        return {"ok": True, "id": event["id"]}


async def test_fault_survives_absent_then_failing_controller(sockdir: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    sim = Simulator(sockdir, 1, "normal", 100)
    (u,) = await sim.start()
    agent = ComputeAgent("host-a", sockdir, bus)
    agent.outbox = FaultOutbox(agent._deliver_fault, backoff_base_s=0.02, backoff_max_s=0.1)
    await agent.start()
    try:
        await until(lambda: u in agent.sessions and agent.sessions[u].state.phase == "enabled")
        sim.hang(u, True)  # the guest stops answering: heartbeat_loss
        await until(lambda: agent.counters["faults"] == 1)
        # no controller serves yet: the fault waits, retried
        await until(lambda: agent.outbox.attempts >= 3)
        assert agent.outbox.pending == 1
        event = agent.outbox.pending_events()[0]
        ctl = FlakyController(failures=2)
        await bus.serve_controller(ctl)
        await until(lambda: agent.outbox.pending == 0)
        assert len(ctl.calls) == 3  # two refused, the third acked
        assert {c["id"] for c in ctl.calls} == {event["id"]}
        got = ctl.calls[-1]
        assert got["kind"] == "heartbeat_loss" and got["instance_uuid"] == u
        assert got["host"] == "host-a" and got["corrective_action"] == "reboot"
        stamp = datetime.fromisoformat(got["detected_at"])
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
        assert "." in got["detected_at"] and len(got["detected_at"].split(".")[1]) >= 6
        assert isinstance(got["detected_mono"], float)
        assert agent.stats()["faults_delivered"] == 1
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


async def test_outbox_retries_each_fault_independently_and_counts() -> None:
    answers: dict[str, list[object]] = {"a": [RuntimeError("x"), None, {"ok": True}],
                                        "b": [{"ok": True, "id": "b"}]}
    sent: list[str] = []

    async def send(event: dict) -> object:
        sent.append(event["id"])
        answer = answers[event["id"]].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    box = FaultOutbox(send, concurrency=2, backoff_base_s=0.01, backoff_max_s=0.02)
    box.start()
    try:
        box.put({"id": "a"})
        box.put({"id": "b"})
        box.put({"id": "a"})  # already pending: not queued twice
        await asyncio.wait_for(box.wait_delivered("a"), 5)
        await asyncio.wait_for(box.wait_delivered("b"), 5)
        assert box.pending == 0 and box.delivered == 2
        # a None answer is not an ack: "a" took three attempts
        assert sent.count("a") == 3 and sent.count("b") == 1
        assert box.failures == 2
    finally:
        await box.stop()
