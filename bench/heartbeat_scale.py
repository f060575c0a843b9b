"""Compute agent at scale: CPU and challenge round trip with 100/500/1000 guests.

The compute agent runs alone in a child process (the one measured: CPU from
/proc/<pid>/stat, utime+stime); the simulated guests (nfvha.compute.simguest,
StarlingX heartbeat v3 over UNIX sockets standing in for QEMU chardevs) run
in other processes, up to 250 per process. Every guest is healthy, so any
fault in the measured window is a false alarm.

    python bench/heartbeat_scale.py [--quick] [--sizes 100,500,1000] [--interval-ms 100]
        [--tree DIR] [--rounds N] [--pin]

--tree runs the measured agent from another checkout (``git worktree add
/tmp/oldtree <rev>``; the guests stay this checkout's), so old and new code
are compared under the same conditions; --rounds N with --tree alternates
old/new N times per size and prints both. In the agent's environment,
NFVHA_BENCH_PROFILE=FILE writes a cProfile of the agent there and
NFVHA_BENCH_LOOP=uvloop runs it on uvloop (if installed),
NFVHA_BENCH_STEADY=0 keeps every session off the C steady path and
NFVHA_BENCH_READ_BATCH_MS=N sets the agent's [heartbeat] read_batch_ms.

Round trip = challenge written by the agent -> valid answer read by the
agent (its own monotonic clock). "late" = how long after its deadline a
challenge left (the agent's event loop delay). All figures come from this
run; nothing is stored.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# the measured agent's checkout (--tree) comes first, whatever the script's own
sys.path.insert(0, os.environ.get("NFVHA_BENCH_TREE", str(ROOT)))
from _common import StubController, pct  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def summary(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "median": statistics.median(xs) if xs else None,
            "p99": pct(xs, 0.99), "max": max(xs) if xs else None}


# ---- the measured process: the compute agent alone ---------------------------------------

async def agent_main(directory: str, interval_ms: int) -> None:
    from nfvha.bus import make_bus
    from nfvha.compute.agent import ComputeAgent
    from nfvha.protocol.host import HostConfig

    bus = make_bus("inproc://")
    await bus.start()
    ctl = StubController()
    await bus.serve_controller(ctl)
    agent = ComputeAgent("bench", Path(directory), bus,
                         host_config=HostConfig(min_interval_ms=min(100, interval_ms)))
    # NFVHA_BENCH_STEADY=0: every session on the Python machine (no C steady path)
    agent.hooks.steady = os.environ.get("NFVHA_BENCH_STEADY", "1") != "0"
    # NFVHA_BENCH_READ_BATCH_MS=0: each guest socket read as soon as it is readable
    if "NFVHA_BENCH_READ_BATCH_MS" in os.environ:
        agent.read_batch_ms = float(os.environ["NFVHA_BENCH_READ_BATCH_MS"])
    await agent.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    faults_at_reset = 0

    def loop_counters() -> dict[str, int]:
        # how the loop's work is batched: passes over the guest sockets' epoll,
        # sockets served per pass, timer wake-ups, timers fired per wake-up
        # (an older checkout may lack either structure: zeros)
        out = {"passes": 0, "events": 0, "wakeups": 0, "fired": 0, "handed": 0}
        for mod in ("guestio", "timers"):
            try:
                m = __import__(f"nfvha.compute.{mod}", fromlist=["for_loop"])
                out.update({k: v for k, v in m.for_loop(loop).counters.items() if k in out})
            except (ImportError, AttributeError):
                pass
        try:  # the C engine's own passes (compute/steadyloop.py): its sockets and timers
            from nfvha.compute import steady, steadyloop
            if not steady.AVAILABLE:
                raise ImportError
            from nfvha.compute.session import READ_SIZE
            eng = steadyloop.for_loop(READ_SIZE, loop).engine.counters
            out["events"] += eng["answered"]
            out["fired"] += eng["fired"]
            out["handed"] = eng["handed"]
        except (ImportError, AttributeError, TypeError):
            pass
        return out

    at_reset = loop_counters()
    while True:
        cmd = (await reader.readline()).decode().strip()
        if cmd in ("", "quit"):
            break
        if cmd == "status":
            st = agent.stats()
            out: dict[str, Any] = {"sessions": st["sessions"], "connected": st["connected"],
                                   "enabled": st["phases"].get("enabled", 0)}
        elif cmd == "reset":
            agent.reset_samples()
            faults_at_reset = len(ctl.faults)
            at_reset = loop_counters()
            out = {"reset": True}
        else:  # report
            st = agent.stats()
            out = {"rtt": summary(st["rtt_ms"]), "late": summary(st["late_ms"]),
                   "faults": len(ctl.faults) - faults_at_reset,
                   "fault_kinds": sorted({f["kind"] for f in ctl.faults[faults_at_reset:]}),
                   "enabled": st["phases"].get("enabled", 0),
                   "violations": st["violations"],
                   # sessions whose machine is on the C steady path right now
                   "steady": sum(getattr(s, "on_steady_path", False)
                                 for s in agent.sessions.values()),
                   "loop": {k: v - at_reset[k] for k, v in loop_counters().items()}}
        print(json.dumps(out), flush=True)
    await agent.stop()
    await bus.stop()


# ---- the control: how late an idle process wakes up on this machine right now -------------

CONTROL = r"""
import json, sys, threading, time
lat, stop = [], threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    t = time.monotonic()
    time.sleep(0.01)
    lat.append((time.monotonic() - t - 0.01) * 1000.0)
lat.sort()
print(json.dumps({"p99": lat[int(0.99 * len(lat))] if lat else None,
                  "max": lat[-1] if lat else None}), flush=True)
"""


# ---- the driver ------------------------------------------------------------------------------

def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


class Child:
    def __init__(self, args: list[str], tree: Path = ROOT) -> None:
        self.proc = subprocess.Popen([sys.executable, *args], cwd=tree, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(tree),
                                          "NFVHA_BENCH_TREE": str(tree)})

    def ask(self, cmd: str | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if cmd is not None:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {self.proc.args} exited")
        return json.loads(line)

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def run_size(n: int, interval_ms: int, seconds: float, per_proc: int,
             tree: Path = ROOT, pin: tuple[set[int], set[int]] | None = None
             ) -> dict[str, Any]:
    """`pin`: (the agent's CPUs, the guests' CPUs)."""
    directory = tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp")
    guests: list[Child] = []
    agent: Child | None = None
    try:
        left = n
        while left > 0:
            k = min(per_proc, left)
            g = Child(["-m", "nfvha.compute.simguest", "--dir", directory, "--count", str(k),
                       "--interval-ms", str(interval_ms)])
            if pin:
                os.sched_setaffinity(g.proc.pid, pin[1])
            g.ask()  # ready
            guests.append(g)
            left -= k
        agent = Child([str(Path(__file__).resolve()), "--agent", directory,
                       "--interval-ms", str(interval_ms)], tree)
        if pin:
            os.sched_setaffinity(agent.proc.pid, pin[0])
        t0 = time.monotonic()
        while True:
            st = agent.ask("status")
            if st["enabled"] == n:
                break
            if time.monotonic() - t0 > 60:
                raise RuntimeError(f"only {st['enabled']} of {n} guests registered in 60 s")
            time.sleep(0.2)
        registered_s = time.monotonic() - t0
        time.sleep(min(2.0, seconds / 2))  # warm-up
        agent.ask("reset")
        pid = agent.proc.pid
        (u0, s0), w0 = cpu_times(pid), time.monotonic()
        g0 = sum(cpu_seconds(g.proc.pid) for g in guests)
        control = subprocess.Popen([sys.executable, "-c", CONTROL], text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        time.sleep(seconds)
        (u1, s1), w1 = cpu_times(pid), time.monotonic()
        g1 = sum(cpu_seconds(g.proc.pid) for g in guests)
        rep = agent.ask("report")
        ctl_out, _ = control.communicate("", timeout=10)
        return {"guests": n, "interval_ms": interval_ms, "seconds": round(w1 - w0, 2),
                "cpu_pct": 100.0 * (u1 + s1 - u0 - s0) / (w1 - w0),
                "sys_pct": 100.0 * (s1 - s0) / (w1 - w0), "tree": str(tree),
                "cpu_s": u1 + s1 - u0 - s0,
                "guest_cpu_pct": 100.0 * (g1 - g0) / (w1 - w0),
                "registered_s": registered_s, "control": json.loads(ctl_out), **rep}
    finally:
        if agent is not None:
            agent.close()
        for g in guests:
            g.close()
        shutil.rmtree(directory, ignore_errors=True)


def per_answer_us(r: dict[str, Any]) -> float | None:
    """Agent CPU per challenge answered: what a cycle costs, less sensitive to
    how many cycles a loaded machine let the agent run than CPU % is."""
    return 1e6 * r["cpu_s"] / r["rtt"]["n"] if r["rtt"]["n"] else None


def ratio(r: dict[str, Any], a: str, b: str) -> float | None:
    loop = r.get("loop") or {}
    return loop[a] / loop[b] if loop.get(b) else None


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows (smoke run)")
    p.add_argument("--sizes", default="100,500,1000")
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--seconds", type=float, default=None, help="measured window per size")
    p.add_argument("--guests-per-process", type=int, default=250)
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.add_argument("--tree", type=Path, default=None,
                   help="also measure the agent of this checkout (e.g. a git worktree of an "
                        "older revision), alternating with this one")
    p.add_argument("--rounds", type=int, default=1,
                   help="with --tree: old/new pairs per size (alternating)")
    p.add_argument("--pin", action="store_true",
                   help="the agent on the first CPU, the guests on the others (as on a "
                        "telco host: the agent on a housekeeping core, the VMs on theirs)")
    p.add_argument("--agent", metavar="DIR", help=argparse.SUPPRESS)  # the measured child
    args = p.parse_args()
    if args.agent:
        profile = os.environ.get("NFVHA_BENCH_PROFILE")
        if profile:
            import cProfile
            cProfile.runctx("asyncio.run(agent_main(args.agent, args.interval_ms))",
                            globals(), locals(), profile)
        elif os.environ.get("NFVHA_BENCH_LOOP") == "uvloop":
            import uvloop
            uvloop.run(agent_main(args.agent, args.interval_ms))
        else:
            asyncio.run(agent_main(args.agent, args.interval_ms))
        return 0
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"compute agent CPU and challenge round trip, interval {args.interval_ms} ms, "
          f"{seconds:.0f} s per size; {os.cpu_count()} CPUs, load average before "
          f"{os.getloadavg()[0]:.2f}")
    cpus = sorted(os.sched_getaffinity(0))
    pin = None
    if args.pin:
        if len(cpus) < 2:
            p.error("--pin needs at least 2 CPUs")
        pin = ({cpus[0]}, set(cpus[1:]))
        print(f"agent pinned to CPU {cpus[0]}, guests to CPUs {cpus[1:]}")
    trees = [ROOT] if args.tree is None else [args.tree.resolve(), ROOT]
    rounds = max(1, args.rounds) if args.tree is not None else 1
    code = "code " if args.tree is not None else ""
    print(f"{code}{'guests':>6} {'agent CPU %':>11} {'(system)':>8} {'RTT median':>10} "
          f"{'RTT p99':>8} {'RTT max':>8} {'late p99':>8} {'challenges':>10} "
          f"{'false alarms':>12} {'guests CPU %':>12} {'idle wake p99':>13} {'µs/answer':>9} "
          f"{'reads/pass':>10} {'timers/wake':>11} {'C path':>6} {'exits/s':>7}")
    results = []
    ok = True
    for n in sizes:
        for _ in range(rounds):
            for tree in trees:
                r = run_size(n, args.interval_ms, seconds, args.guests_per_process, tree,
                             pin)
                results.append(r)
                name = ("new  " if tree == ROOT else "old  ") if args.tree is not None else ""
                print(f"{name}{n:>6} {fmt(r['cpu_pct'], 1):>11} {fmt(r['sys_pct'], 1):>8} "
                      f"{fmt(r['rtt']['median']):>10} {fmt(r['rtt']['p99']):>8} "
                      f"{fmt(r['rtt']['max']):>8} {fmt(r['late']['p99']):>8} "
                      f"{r['rtt']['n']:>10} {r['faults']:>12} "
                      f"{fmt(r['guest_cpu_pct'], 1):>12} {fmt(r['control']['p99']):>13} "
                      f"{fmt(per_answer_us(r), 1):>9} {fmt(ratio(r, 'events', 'passes')):>10} "
                      f"{fmt(ratio(r, 'fired', 'wakeups')):>11} {r.get('steady', 0):>6} "
                      f"{fmt((r.get('loop') or {}).get('handed', 0) / seconds, 1):>7}",
                      flush=True)
                ok &= r["faults"] == 0
    print("(ms; RTT = challenge written -> answer read by the agent; late = challenge sent "
          "after its deadline by; CPU = % of one core, from /proc/<pid>/stat, (system) the "
          "kernel's part of it; idle wake p99 = how late a separate idle process woke from a "
          "10 ms sleep in the same window: the machine's own scheduling noise, for scale; "
          "µs/answer = agent CPU per challenge answered; reads/pass = guest sockets read per "
          "pass over their epoll, timers/wake = sessions' timers fired per wake-up: how "
          "much each turn of the agent's loop gets done; C path = sessions on the C steady "
          "path (compute/steady.py) at the end, exits/s = sessions the C engine handed "
          "back to the Python machine per second (a late answer, anything not steady)"
          + ("; old = the agent of --tree, new = this checkout's, alternating" if args.tree
             else "") + ")")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
