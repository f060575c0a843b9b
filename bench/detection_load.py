"""No false alarm under load: the detector with its one-interval deadline on
a host that starves someone, three ways in a row.

100 simulated guests (one process, nfvha.compute.simguest) and one more
guest in a process of its own heartbeat at 100 ms through the compute agent
(this process). Nothing hangs. In turn, for --seconds each:

1. ``host-saturated``: stress-ng keeps every CPU of the host busy;
2. ``agent-capped``: this process (the compute agent) is capped at 20 % of
   one CPU by its cgroup;
3. ``guest-capped``: the lone guest's process is capped at 5 % of one CPU,
   and a busy loop shares its cgroup and its CPU (a VM whose one vCPU is busy
   and capped).

Every fault is a false alarm. The capped guest must be reported ``starved``
(a host-side condition) and never failed.

    python bench/detection_load.py [--seconds 600] [--short|--quick] [--json]

Default 10 minutes each (make bench). --short: 20 s each (the form CI
runs). --json: one JSON document on stdout,
{"scenarios": [{"name": ..., "seconds": F, "guests": N, "false_alarms": N,
"faults": [...], "starved": [uuid, ...], "capped_guest_starved": bool,
"rtt_p99_ms": F, "late_p99_ms": F}], "ok": bool}; the table goes to stderr.
Needs root (cgroups) and stress-ng; exits 2 saying why when they are missing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _cgroup import CpuCap, unavailable  # noqa: E402
from _common import StubController, pct  # noqa: E402

from nfvha.bus import make_bus  # noqa: E402
from nfvha.compute.agent import ComputeAgent  # noqa: E402
from nfvha.protocol.host import HostConfig  # noqa: E402

INTERVAL_MS = 100
GUESTS = 100
BUSY = "import time\nwhile True:\n    time.monotonic()\n"


class Watch:
    def __init__(self) -> None:
        self.outputs: list[tuple[str, str, Any, float]] = []

    def __call__(self, uuid: str, out: Any, mono: float) -> None:
        kind = type(out).__name__
        if kind in ("Fault", "Starved", "StateChanged"):
            self.outputs.append((uuid, kind, out, mono))

    def since(self, t0: float, kind: str) -> list[tuple[str, Any]]:
        return [(u, o) for u, k, o, m in self.outputs if k == kind and m >= t0]


def spawn_guests(directory: Path, count: int) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfvha.compute.simguest", "--dir", str(directory),
         "--count", str(count), "--interval-ms", str(INTERVAL_MS)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["ready"]


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


class Stress(AbstractContextManager["Stress"]):
    def __enter__(self) -> Stress:
        self.proc = subprocess.Popen(["stress-ng", "--cpu", str(os.cpu_count() or 1),
                                      "--quiet"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            stop(self.proc)


CAP_PERIOD_US = 97_000


class CappedBusyGuest(AbstractContextManager["CappedBusyGuest"]):
    """The guest's process and a busy loop in one cgroup capped at `share`."""

    def __init__(self, pid: int, share: float) -> None:
        self.pid = pid
        self.share = share

    def __enter__(self) -> CappedBusyGuest:
        self.busy = subprocess.Popen([sys.executable, "-c", BUSY])
        # One CPU for both, as a VM's one vCPU runs its busy work and its
        # heartbeat agent: on different CPUs the guest lives on its CPU's
        # leftover slice of the quota (the kernel no longer expires them) and
        # is not held back at all.
        self.cpus = os.sched_getaffinity(self.pid)
        one = {max(self.cpus)}
        for pid in (self.pid, self.busy.pid):
            os.sched_setaffinity(pid, one)
        # A cap period a little off the 100 ms interval: challenges keep a
        # fixed rhythm, and one locked to the period's few unthrottled ms
        # would be answered on time every time; off by 3 ms, they sweep
        # through the period.
        self.cap = CpuCap(self.share, self.pid, self.busy.pid,
                          period_us=CAP_PERIOD_US).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.busy)
        self.cap.__exit__(*exc)
        try:
            os.sched_setaffinity(self.pid, self.cpus)
        except OSError:
            pass  # the guest is gone


async def run(seconds: float, out: Any) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="nfvha-load-", dir="/tmp"))
    bus = make_bus("inproc://")
    await bus.start()
    await bus.serve_controller(StubController())
    procs: list[subprocess.Popen[Any]] = []
    agent = ComputeAgent("bench", directory, bus, scan_interval_s=0.05,
                         host_config=HostConfig(min_interval_ms=INTERVAL_MS))
    watch = Watch()
    agent.add_observer(watch)
    results = []
    try:
        many, uuids = spawn_guests(directory, GUESTS)
        lone, (capped,) = spawn_guests(directory, 1)
        procs += [many, lone]
        await agent.start()
        end = time.monotonic() + 60
        while not all(u in agent.sessions and agent.sessions[u].state.phase == "enabled"
                      for u in [*uuids, capped]):
            if time.monotonic() > end:
                raise RuntimeError("guests did not register within 60 s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(2 * INTERVAL_MS / 1000)
        scenarios: list[tuple[str, AbstractContextManager[Any]]] = [
            ("host-saturated", Stress()),
            ("agent-capped", CpuCap(0.20, os.getpid())),
            ("guest-capped", CappedBusyGuest(lone.pid, 0.05)),
        ]
        for name, condition in scenarios:
            agent.reset_samples()
            t0 = time.monotonic()
            with condition:
                await asyncio.sleep(seconds)
                throttled = _throttled(condition)
            t1 = time.monotonic()
            await asyncio.sleep(1.0)  # a cry that was on its way still counts
            st = agent.stats()
            faults = watch.since(t0, "Fault")
            starved = sorted({u for u, o in watch.since(t0, "Starved") if o.active})
            failed = [u for u, o in watch.since(t0, "StateChanged") if o.state == "failed"]
            r = {"name": name, "seconds": round(t1 - t0, 1), "guests": GUESTS + 1,
                 "false_alarms": len(faults),
                 "faults": [{"instance": u, "kind": o.kind, "detail": o.detail}
                            for u, o in faults],
                 "starved": starved, "capped_guest_starved": capped in starved,
                 "failed": sorted(set(failed)),
                 "rtt_p99_ms": pct(st["rtt_ms"], 0.99), "late_p99_ms": pct(st["late_ms"], 0.99)}
            results.append(r)
            # the capped guest's own figures and the cap's, to see why it was (not) starved
            mine = sorted(agent.sessions[capped].rtt_ms)
            r["capped_guest"] = {"answers": len(mine), "rtt_median_ms": pct(mine, 0.5),
                                 "rtt_max_ms": mine[-1] if mine else None,
                                 "cap_throttled": throttled}
            print(f"{name:>15} {r['seconds']:>7.1f} {r['false_alarms']:>12} "
                  f"{len(starved):>7} {str(r['capped_guest_starved']):>13} "
                  f"{_f(r['rtt_p99_ms']):>8} {_f(r['late_p99_ms']):>8}   "
                  f"(capped guest: {len(mine)} answers, rtt median "
                  f"{_f(r['capped_guest']['rtt_median_ms'])} max "
                  f"{_f(r['capped_guest']['rtt_max_ms'])} ms; cap: {throttled or '-'})",
                  file=out, flush=True)
    finally:
        await agent.stop()
        for p in procs:
            stop(p)
        await bus.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return {"scenarios": results}


def _throttled(condition: Any) -> str | None:
    """A cgroup cap's periods throttled so far, from its cpu.stat."""
    cap = getattr(condition, "cap", condition)
    path = getattr(cap, "path", None)
    try:
        stat = dict(line.split() for line in (path / "cpu.stat").read_text().splitlines())
    except (OSError, TypeError, ValueError):
        return None
    return f"{stat.get('nr_throttled')}/{stat.get('nr_periods')} periods throttled"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600.0, help="per scenario")
    p.add_argument("--short", "--quick", action="store_true", help="20 s per scenario")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    why = unavailable() or (None if shutil.which("stress-ng") else "stress-ng not installed")
    if why:
        print(f"detection_load: {why}", file=sys.stderr)
        return 2
    seconds = 20.0 if args.short else args.seconds
    out = sys.stderr if args.json else sys.stdout
    print(f"no false alarm under load: {GUESTS} + 1 simulated guests at {INTERVAL_MS} ms, "
          f"{seconds:.0f} s per scenario, {os.cpu_count()} CPUs", file=out)
    print(f"{'scenario':>15} {'seconds':>7} {'false alarms':>12} {'starved':>7} "
          f"{'capped starved':>13} {'rtt p99':>8} {'late p99':>8}", file=out)
    result = asyncio.run(run(seconds, out))
    ok = all(r["false_alarms"] == 0 for r in result["scenarios"]) and \
        result["scenarios"][-1]["capped_guest_starved"]
    result["ok"] = ok
    if args.json:
        print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
