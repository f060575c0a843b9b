"""Hostile guests (a flood of 10k messages a second, wrong nonces, a 1 MB
line a second, byte-at-a-time answers) leave their neighbour's challenge
round trip unchanged, and the neighbour gets no fault.

The guests run in their own processes (simguest), so the agent's loop only
carries the agent's work; the neighbour's figures are compared with a
baseline window taken just before, on the same machine. Margins are
generous (a loaded shared machine), yet a single blocking of the loop for
tens of milliseconds per attack would exceed them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import until

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S = 3.0
HOSTILE = ("flood", "wrongnonce", "bigline", "bytewise")
NEIGHBOURS = 10


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = tempfile.mkdtemp(prefix="nfvha-", dir="/tmp")  # short: UNIX paths <= 107 bytes
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


class Recorder:
    def __init__(self) -> None:
        self.faults: list[dict] = []

    async def hello(self, host: str, instances: list[dict], agent_started_at=None) -> None:
        pass

    async def instance_state(self, **kwargs: object) -> None:
        pass

    async def fault(self, event: dict) -> dict:
        self.faults.append(event)
        return {"ok": True, "id": event["id"]}


def spawn(directory: Path, behaviour: str,
          count: int = 1) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfvha.compute.simguest", "--dir", str(directory),
         "--count", str(count), "--behaviour", behaviour, "--interval-ms", "100"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    return proc, ready["ready"]


def stop(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait(5)
    except Exception:
        proc.kill()
        proc.wait()


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


async def window(agent: ComputeAgent, uuids: list[str]) -> tuple[list[float], list[float]]:
    sessions = [agent.sessions[u] for u in uuids]
    for s in sessions:
        s.rtt_ms.clear()
        s.late_ms.clear()
    await asyncio.sleep(WINDOW_S)
    return ([x for s in sessions for x in s.rtt_ms], [x for s in sessions for x in s.late_ms])


async def test_hostile_guests_leave_neighbour_round_trip_unchanged(
        sockdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="nfvha.compute.session")
    bus = make_bus("inproc://")
    await bus.start()
    ctl = Recorder()
    await bus.serve_controller(ctl)
    procs: list[subprocess.Popen[str]] = []
    agent = ComputeAgent("host-a", sockdir, bus, scan_interval_s=0.05)
    await agent.start()
    try:
        # ten well-behaved neighbours: enough samples for a p99 that one
        # scheduling hiccup of this shared machine does not make
        proc, neighbours = spawn(sockdir, "normal", NEIGHBOURS)
        procs.append(proc)
        await until(lambda: all(u in agent.sessions and agent.sessions[u].state.phase == "enabled"
                                for u in neighbours))
        base_rtt, base_late = await window(agent, neighbours)

        hostile: dict[str, str] = {}
        for behaviour in HOSTILE:
            proc, (u,) = spawn(sockdir, behaviour)
            procs.append(proc)
            hostile[behaviour] = u
        await until(lambda: all(u in agent.sessions and agent.sessions[u].transport
                                for u in hostile.values()))
        await asyncio.sleep(1.0)  # let every attack start
        rtt, late = await window(agent, neighbours)

        figures = {
            "baseline": (statistics.median(base_rtt), p99(base_rtt), p99(base_late)),
            "hostile": (statistics.median(rtt), p99(rtt), p99(late)),
        }
        print("neighbour rtt median/p99, late p99 (ms):", figures)
        per = agent.stats(per_session=True)["per_session"]
        print({b: {k: per[u][k] for k in ("phase", "violations", "dropped", "read_pauses",
                                            "bytes_in")} for b, u in hostile.items()})

        # every challenge to the neighbour was answered, in both windows
        expected = NEIGHBOURS * WINDOW_S / 0.1
        assert len(base_rtt) >= 0.8 * expected and len(rtt) >= 0.8 * expected
        # round trip and challenge punctuality unchanged, within generous margins
        assert statistics.median(rtt) <= statistics.median(base_rtt) + 5.0
        assert p99(rtt) <= max(3 * p99(base_rtt), p99(base_rtt) + 25.0)
        assert p99(late) <= max(3 * p99(base_late), p99(base_late) + 25.0)
        # the neighbours got no fault and stayed enabled
        assert not [f for f in ctl.faults if f["instance_uuid"] in neighbours], [
            (f["kind"], f["detail"]) for f in ctl.faults if f["instance_uuid"] in neighbours]
        for u in neighbours:
            assert agent.sessions[u].state.phase == "enabled"
        # Nothing of the attacks leaked into a neighbour's stream. A rare late
        # answer is allowed: the neighbours' own process shares two cores with
        # four attackers and may miss one 100 ms deadline (seen once in CI).
        reasons = [r.getMessage() for r in caplog.records
                   if any(u in r.getMessage() for u in neighbours)]
        assert all("late response" in m for m in reasons), reasons
        late_answers = sum(agent.sessions[u].counters["violations"] for u in neighbours)
        assert late_answers <= 0.01 * (len(base_rtt) + len(rtt)), late_answers
        # and the hostile ones were seen for what they are
        assert per[hostile["flood"]]["dropped"] > 0
        assert per[hostile["wrongnonce"]]["violations"] > 0
        assert any(f["instance_uuid"] == hostile["wrongnonce"] and f["kind"] == "heartbeat_loss"
                   for f in ctl.faults)
        assert per[hostile["bigline"]]["violations"] > 0
        # the 1 MB lines are read no faster than the byte budget allows
        assert per[hostile["bigline"]]["read_pauses"] > 0
        assert agent.stats()["session_internal_errors"] == 0
    finally:
        await agent.stop()
        for proc in procs:
            stop(proc)
        await bus.stop()
