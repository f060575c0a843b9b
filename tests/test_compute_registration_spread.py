"""Guests that register together get their challenges spread over the
interval (an early re-phasing tick), and no guest ever waits longer than one
interval for its next challenge, so a hang right after registering is still
declared within three intervals."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import until

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.protocol import host as hostsm

ROOT = Path(__file__).resolve().parent.parent
GUESTS = 20
INTERVAL_S = 0.1


class Quiet:
    async def hello(self, **kw: object) -> None: ...
    async def instance_state(self, **kw: object) -> None: ...
    async def sync(self, **kw: object) -> None: ...

    async def fault(self, event: dict) -> dict:
        return {"ok": True, "id": event["id"]}


async def test_challenges_spread_without_any_longer_gap(sock_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfvha.compute.simguest", "--dir", str(sock_dir), "--count",
         str(GUESTS), "--behaviour", "normal", "--interval-ms", str(int(INTERVAL_S * 1000))],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdin is not None
    uuids = json.loads(proc.stdout.readline())["ready"]
    bus = make_bus("inproc://")
    await bus.start()
    await bus.serve_controller(Quiet())
    sent: dict[str, list[float]] = {u: [] for u in uuids}

    def observe(uuid: str, out: object, mono: float) -> None:
        if isinstance(out, hostsm.Send) and out.msg["msg_type"] == "challenge":
            sent[uuid].append(mono)

    agent = ComputeAgent("host-a", sock_dir, bus, scan_interval_s=0.05)
    agent.add_observer(observe)
    await agent.start()  # every guest connects and registers at once
    try:
        await until(lambda: all(len(t) >= 6 for t in sent.values()), timeout=20)
        # the second challenge came at a random point of the first interval...
        offsets = sorted((t[1] - t[0]) / INTERVAL_S for t in sent.values())
        assert offsets[-1] <= 1.0 + 0.3  # never later than the first deadline (+ slack)
        assert offsets[-1] - offsets[0] > 0.3, offsets  # spread, not in lock step
        # ... and after that every challenge follows the one before by one interval
        for times in sent.values():
            gaps = [b - a for a, b in zip(times[1:], times[2:])]
            assert max(gaps) <= INTERVAL_S * 1.5, gaps
        assert not [s for s in agent.sessions.values() if s.state.phase != "enabled"]
    finally:
        await agent.stop()
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait(5)
        await bus.stop()
