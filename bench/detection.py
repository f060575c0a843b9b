"""Detection latency: guest hangs -> the compute agent emits the fault event.

For each heartbeat interval (100, 250, 1000 ms), guests heartbeat through
the compute agent; one after another (at random moments, so at random
phases of their challenge rhythm) a guest is hung and the time until the
agent's `heartbeat_loss` fault is measured on the monotonic clock (the
agent's observer hook). The guest is then resumed and must be re-enabled
before it is hung again. Any other fault is a false alarm.

Guests: real `nfvha-guest` processes (python -m nfvha.guest) frozen with
SIGSTOP, each on a pseudo-terminal bridged to its chardev socket (the
demo's QEMU stand-in, nfvha.demo.qemu_pty); if the guest agent is not
available, simulated guests (nfvha.compute.simguest) that stop answering.
The output says which. By the rules of the host machine (a miss is
declared at the response deadline of an unanswered challenge, which follows
the measured round trip; the fault at the threshold-th miss in a row, 1 by
default) a hang is detected within one interval plus that deadline, plus
the agent's delays. A false alarm is any fault of a guest that was not hung
at that moment.

    python bench/detection.py [--quick] [--intervals 100,250,1000] [--samples N] [--json]

With --json, stdout is one JSON document (the table goes to stderr):
{"intervals": [{"interval_ms": N, "n": N, "median_ms": F, "p99_ms": F,
"false_alarms": N, ...}]}
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _common import StubController, pct  # noqa: E402

from nfvha.bus import make_bus  # noqa: E402
from nfvha.compute.agent import ComputeAgent  # noqa: E402
from nfvha.protocol.host import RTT_SAMPLES_BEFORE_ADAPTING, HostConfig  # noqa: E402


class Watch:
    """The agent's outputs as they happen: faults and phases, by instance."""

    def __init__(self) -> None:
        self.faults: list[tuple[str, str, float]] = []
        self.details: list[tuple[float, str]] = []  # for the slow ones
        self.phase: dict[str, str] = {}
        self.changed = asyncio.Event()

    def __call__(self, instance_uuid: str, output: Any, mono: float) -> None:
        name = type(output).__name__
        if name == "Fault":
            self.faults.append((instance_uuid, output.kind, mono))
            self.details.append((mono, output.detail))
            self.changed.set()
        elif name == "StateChanged":
            self.phase[instance_uuid] = output.state
            self.changed.set()

    async def wait(self, cond: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not cond():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return True


class RealGuests:
    kind = "real nfvha-guest processes (SIGSTOP), pty bridged to the chardev socket"

    def __init__(self, directory: Path, interval_ms: int) -> None:
        self.directory = directory
        self.interval_ms = interval_ms
        self.channels: dict[str, Any] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self, count: int) -> list[str]:
        from nfvha.demo.qemu_pty import PtyChannel

        (self.directory / "dev").mkdir(exist_ok=True)
        for _ in range(count):
            u = str(uuidlib.uuid4())
            ch = PtyChannel(self.directory / f"cgcs.heartbeat.{u}.sock",
                            self.directory / "dev" / u)
            await ch.start()
            self.channels[u] = ch
            self.procs[u] = subprocess.Popen(
                [sys.executable, "-m", "nfvha.guest", "--device", str(self.directory / "dev" / u),
                 "--interval-ms", str(self.interval_ms), "--name", f"bench-{u[:8]}",
                 "--log-level", "WARNING"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        return list(self.channels)

    def hang(self, u: str) -> float:
        t = time.monotonic()
        os.kill(self.procs[u].pid, signal.SIGSTOP)
        return t

    def resume(self, u: str) -> None:
        os.kill(self.procs[u].pid, signal.SIGCONT)

    async def stop(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGCONT)
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ch in self.channels.values():
            await ch.close()


class SimulatedGuests:
    kind = "simulated guests (nfvha.compute.simguest) that stop answering"

    def __init__(self, directory: Path, interval_ms: int) -> None:
        self.directory = directory
        self.interval_ms = interval_ms
        self.proc: subprocess.Popen[str] | None = None

    async def start(self, count: int) -> list[str]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nfvha.compute.simguest", "--dir", str(self.directory),
             "--count", str(count), "--interval-ms", str(self.interval_ms)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())["ready"]

    def _say(self, line: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def hang(self, u: str) -> float:
        return float(self._say(f"hang {u}")["mono"])  # the guest's own clock (same host)

    def resume(self, u: str) -> None:
        self._say(f"resume {u}")

    async def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(10)


def real_guest_available() -> bool:
    return (importlib.util.find_spec("nfvha.guest.__main__") is not None
            and importlib.util.find_spec("nfvha.demo.qemu_pty") is not None)


async def measure(interval_ms: int, samples: int, guests: int, simulated: bool,
                  threshold: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="nfvha-det-", dir="/tmp"))
    bus = make_bus("inproc://")
    await bus.start()
    await bus.serve_controller(StubController())
    pool: RealGuests | SimulatedGuests = (SimulatedGuests if simulated else RealGuests)(
        directory, interval_ms)
    agent = ComputeAgent("bench", directory, bus, scan_interval_s=0.05,
                         host_config=HostConfig(min_interval_ms=min(100, interval_ms),
                                                failure_threshold=threshold))
    watch = Watch()
    agent.add_observer(watch)
    detections: list[float] = []
    slow: list[str] = []  # detections over interval + 50 ms, with the agent's reason
    missed = 0
    hung: dict[str, list[tuple[float, float]]] = {}  # per guest: (hung at, resumed at)
    try:
        uuids = await pool.start(guests)
        await agent.start()
        if not await watch.wait(lambda: all(watch.phase.get(u) == "enabled" for u in uuids), 30):
            raise RuntimeError("guests did not register within 30 s")
        # Steady state: the response deadline adapts after a few answers (until
        # then it is the interval, as right after any registration).
        await asyncio.sleep((RTT_SAMPLES_BEFORE_ADAPTING + 2) * interval_ms / 1000.0)
        limit = (threshold + 3) * interval_ms / 1000.0 + 2.0
        i = 0
        while len(detections) + missed < samples:
            u = uuids[i % len(uuids)]
            i += 1
            # a random moment: a random phase of the challenge rhythm
            await asyncio.sleep(random.uniform(0, interval_ms / 1000.0))
            t0 = pool.hang(u)

            def seen(u: str = u, t0: float = t0) -> bool:
                return any(fu == u and k == "heartbeat_loss" and m >= t0
                           for fu, k, m in watch.faults)

            if await watch.wait(seen, limit):
                t1 = min(m for fu, k, m in watch.faults
                         if fu == u and k == "heartbeat_loss" and m >= t0)
                detections.append((t1 - t0) * 1000.0)
                if t1 - t0 > (interval_ms + 50) / 1000.0:  # say why it took longer
                    slow.append(f"{(t1 - t0) * 1000:.0f} ms: " + next(
                        d for m, d in watch.details if m == t1))
            else:
                missed += 1
            pool.resume(u)
            hung.setdefault(u, []).append((t0, time.monotonic()))
            await watch.wait(lambda u=u: watch.phase.get(u) == "enabled", limit)
        await asyncio.sleep(3 * interval_ms / 1000.0)  # a quiet stretch: any late cry

        def expected(fu: str, kind: str, m: float) -> bool:
            return kind == "heartbeat_loss" and any(a <= m <= b for a, b in hung.get(fu, ()))

        false_alarms = sum(1 for fu, k, m in watch.faults if not expected(fu, k, m))
    finally:
        await agent.stop()
        await pool.stop()
        await bus.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return {"interval_ms": interval_ms, "n": len(detections), "missed": missed,
            "median_ms": statistics.median(detections) if detections else None,
            "p99_ms": pct(detections, 0.99) if detections else None,
            "min_ms": min(detections) if detections else None,
            "max_ms": max(detections) if detections else None,
            "false_alarms": false_alarms, "guests": pool.kind, "slow": slow}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    p.add_argument("--intervals", default="100,250,1000")
    p.add_argument("--samples", type=int, default=None, help="hangs per interval")
    p.add_argument("--guests", type=int, default=5, help="guests heartbeating during the run")
    p.add_argument("--threshold", type=int, default=HostConfig().failure_threshold,
                   help="misses that declare the loss (default: the product's)")
    p.add_argument("--simulated", action="store_true", help="use simulated guests")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    samples = args.samples or (5 if args.quick else 30)
    simulated = args.simulated or not real_guest_available()
    kind = SimulatedGuests.kind if simulated else RealGuests.kind
    out = sys.stderr if args.json else sys.stdout
    print(f"detection latency, guest hang -> fault event; {kind}; failure threshold "
          f"{args.threshold} misses; {samples} hangs per interval; load average "
          f"{os.getloadavg()[0]:.2f}", file=out)
    print(f"{'interval ms':>11} {'median ms':>9} {'p99 ms':>8} {'min ms':>8} {'max ms':>8} "
          f"{'hangs':>5} {'missed':>6} {'false alarms':>12}", file=out)
    results = []
    ok = True
    for interval in [int(x) for x in args.intervals.split(",")]:
        r = asyncio.run(measure(interval, samples, args.guests, simulated, args.threshold))
        results.append(r)

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f}"

        print(f"{interval:>11} {f(r['median_ms']):>9} {f(r['p99_ms']):>8} {f(r['min_ms']):>8} "
              f"{f(r['max_ms']):>8} {r['n']:>5} {r['missed']:>6} "
              f"{r['false_alarms']:>12}", file=out, flush=True)
        ok &= r["missed"] == 0 and r["false_alarms"] == 0
    if args.json:
        print(json.dumps({"intervals": results}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
