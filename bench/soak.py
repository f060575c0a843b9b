"""Soak: 500 guests at 100 ms for 30 minutes — memory flat, no false alarm,
round trip steady.

Every part is a process of its own, over the machine's RabbitMQ
(127.0.0.1:5672, guest/guest, an exchange of the run's own) and PostgreSQL
(a fresh database, dropped at the end):

- two controllers (``nfvha controller``) sharing that database, each with a
  webhook reporter to the sink;
- a compute agent heartbeating every guest. ``nfvha compute`` exposes no
  round-trip samples (no metrics endpoint), so the agent runs as
  ``bench/soak.py --agent-child CONF``: the same ``start_stack(compute=True)``
  that ``nfvha compute --config-file CONF`` runs, plus a line protocol on
  stdin for its figures;
- the simulated guests (``python -m nfvha.compute.simguest``, 250 a process);
- this process: the webhook stand-in (nfvha/standins/webhook.py) and the
  sampling.

Nothing hangs, so every fault is a false alarm: counted at the agent (by
kind; ``heartbeat_loss`` apart), at the controllers (GET /v1/events) and at
the sink. So that a zero there is no blind spot, both controllers must show
the agent's host up with every instance (GET /v1/hosts, /v1/instances), and
after the count one guest hangs for real: one fault must reach each of the
three (the control). Each window (default 60 s) prints the challenge round trip
(written -> answered, the agent's clock) p50/p99/max, how late challenges
left (p99), the faults so far and every process's RSS (/proc/<pid>/status);
at the end each process's RSS at start and end and its slope in MB per hour
(least squares over all windows, and over the second half, after warm-up).

    python bench/soak.py [--minutes 30] [--guests 500] [--interval-ms 100]
        [--window-s 60] [--json] [--keep]

``make soak`` (SOAK_ARGS="--minutes 3" for a short run). --json: one JSON
document on stdout (the table goes to stderr). Exit 0 when there was no
false alarm, every process lived to the end and the control was seen, 1
otherwise, 2 when
RabbitMQ or PostgreSQL is missing.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct, rabbitmq_unreachable  # noqa: E402

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1/postgres"
PG_BASE = "postgresql+psycopg2://postgres@127.0.0.1/"
RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
RING = 1024  # round-trip samples a session keeps (nfvha/compute/session.py SAMPLES)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- pure parts (tests/test_bench_soak.py) -------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="measured time (default 30)")
    p.add_argument("--guests", type=int, default=500)
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--window-s", type=float, default=60.0,
                   help="one line (round trip, faults, RSS) per window")
    p.add_argument("--guests-per-process", type=int, default=250)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--agent-child", metavar="CONF", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.agent_child:
        return args
    if args.minutes <= 0 or args.guests < 1 or args.window_s <= 0:
        p.error("--minutes, --guests and --window-s must be positive")
    # each session keeps its last RING samples: a longer window would lose some
    if args.window_s * 1000 / args.interval_ms > 0.9 * RING:
        p.error(f"--window-s must hold at most {int(0.9 * RING)} intervals "
                f"({0.9 * RING * args.interval_ms / 1000:.0f} s at {args.interval_ms} ms)")
    return args


def rss_kb(status: str) -> int | None:
    """VmRSS (kB) from the text of /proc/<pid>/status; None if absent (a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per hour; None
    with fewer than two distinct times."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return 3600.0 * sum((t - mt) * (v - mv) for t, v in points) / den


def memory_summary(series: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, Any]]:
    """Per process: RSS (MB) at start, end, max, slope over all samples and
    over the second half of the run (the first half holds the warm-up)."""
    out: dict[str, dict[str, Any]] = {}
    for name, pts in series.items():
        if not pts:
            continue
        half = (pts[0][0] + pts[-1][0]) / 2
        late = [p for p in pts if p[0] >= half]
        out[name] = {"start_mb": round(pts[0][1], 1), "end_mb": round(pts[-1][1], 1),
                     "max_mb": round(max(v for _, v in pts), 1),
                     "slope_mb_per_h": _round(slope_per_hour(pts)),
                     # two points are one step, not a trend
                     "slope_2nd_half_mb_per_h":
                         _round(slope_per_hour(late)) if len(late) >= 3 else None}
    return out


STEP_MS = 0.01  # quantiles to this resolution (rounded down)
TOP_MS = 1000.0  # above it, samples are kept one by one (rare)


def quantiles(xs: Iterable[float]) -> dict[str, Any]:
    """n, p50, p99 (nearest rank, rounded down to STEP_MS) and max of a
    window's samples, from a histogram: sorting ~300 000 floats a minute
    would leave the driver's own RSS growing with float objects, blurring
    the figure it prints."""
    bins = [0] * int(TOP_MS / STEP_MS)
    above: list[float] = []
    n, top = 0, None
    for x in xs:
        n += 1
        if top is None or x > top:
            top = x
        if x < TOP_MS:
            bins[max(0, int(x / STEP_MS + 1e-6))] += 1
        else:
            above.append(x)
    above.sort()

    def rank(q: float) -> float | None:
        if not n:
            return None
        want, seen = min(n - 1, int(q * n)), 0  # the pct() rank, 0-based
        for i, c in enumerate(bins):
            seen += c
            if seen > want:
                return round(i * STEP_MS, 2)
        return above[want - seen]

    return {"n": n, "p50": rank(0.5), "p99": rank(0.99), "max": _round(top, 2)}


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# ---- the compute agent's process -----------------------------------------------------------

class FaultLog(logging.Handler):
    """Counts the faults the agent sends by kind, from its own log record
    (agent.py ``_fault``), so the sessions' hot path is not observed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.kinds: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "instance %s: fault %s (%s)" and isinstance(record.args, tuple):
            kind = str(record.args[1])
            self.kinds[kind] = self.kinds.get(kind, 0) + 1


async def _drain_samples(agent: Any, attr: str, path: Path) -> int:
    """Every session's samples since the last drain, to a file of doubles
    (the driver computes the quantiles: a sort of 300 000 floats would
    stall the loop that runs the heartbeats), a session at a time, so no
    large buffer moves the agent's RSS the soak is watching."""
    n = 0
    with path.open("wb") as f:
        for i, s in enumerate(list(agent.sessions.values())):
            ring = getattr(s, attr)
            part = array("d", ring)
            ring.clear()
            part.tofile(f)
            n += len(part)
            if i % 50 == 49:
                await asyncio.sleep(0)
    return n


async def agent_child(conf_path: str) -> None:
    from nfvha.cli import services

    conf = services.load_conf([conf_path])
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faults = FaultLog()
    logging.getLogger("nfvha.compute.agent").addHandler(faults)
    stack = await services.start_stack(conf, controller=False, compute=True)
    agent = stack.compute
    out_dir = Path(conf_path).parent
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    seq = 0
    try:
        while True:
            cmd = (await reader.readline()).decode().strip()
            if cmd in ("", "quit"):
                break
            phases: dict[str, int] = {}
            for s in list(agent.sessions.values()):
                phases[s.state.phase] = phases.get(s.state.phase, 0) + 1
            reply: dict[str, Any] = {
                "sessions": len(agent.sessions), "phases": phases,
                "faults": agent.counters["faults"], "fault_kinds": dict(faults.kinds),
                "faults_delivered": agent.outbox.delivered,
                "faults_pending": agent.outbox.pending,
                "starved": agent.counters.get("starved", 0),
                "violations": agent.counters["violations"]}
            if cmd == "samples":
                seq += 1
                files = {}
                for attr in ("rtt_ms", "late_ms"):
                    path = out_dir / f"{attr}-{seq}.bin"
                    await _drain_samples(agent, attr, path)
                    files[attr] = str(path)
                reply["files"] = files
            print(json.dumps(reply), flush=True)
    finally:
        await stack.stop()


# ---- the driver ----------------------------------------------------------------------------

def read_rss_mb(pid: int) -> float | None:
    try:
        kb = rss_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return None if kb is None else kb / 1024.0


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pg_unreachable() -> str | None:
    from sqlalchemy import create_engine, text

    try:
        eng = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as exc:  # the driver's or the server's absence, whichever
        return f"PostgreSQL not reachable at 127.0.0.1:5432 as postgres ({exc.__class__.__name__})"


class Database:
    """A fresh PostgreSQL database for the run (as tests/test_controller_helpers.py makes)."""

    def __init__(self, run: str) -> None:
        from sqlalchemy import create_engine

        self.name = f"nfvha_soak_{run}"
        self.url = PG_BASE + self.name
        self.admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")

    def create(self) -> None:
        from sqlalchemy import text

        with self.admin.connect() as c:
            c.execute(text(f"CREATE DATABASE {self.name}"))

    def drop(self) -> None:
        from sqlalchemy import text

        with contextlib.suppress(Exception), self.admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"))
        self.admin.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Soak:
    def __init__(self, args: argparse.Namespace, out: Any) -> None:
        self.args = args
        self.out = out
        self.run_id = uuid.uuid4().hex[:8]
        self.work = Path(tempfile.mkdtemp(prefix="nfvha-soak-", dir="/tmp"))
        self.instances = self.work / "instances"
        self.instances.mkdir()
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.ports: list[int] = []
        self.db = Database(self.run_id)
        self.logs: list[Any] = []
        self.uuids: list[str] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def spawn(self, name: str, *argv: str, stdin: bool = False,
                    stdout: bool = False) -> asyncio.subprocess.Process:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - the child's
        self.logs.append(log)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else log, stderr=log)
        self.procs[name] = proc
        return proc

    async def ask_agent(self, cmd: str) -> dict[str, Any]:
        agent = self.procs["agent"]
        assert agent.stdin is not None and agent.stdout is not None
        agent.stdin.write(cmd.encode() + b"\n")
        await agent.stdin.drain()
        line = await asyncio.wait_for(agent.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the compute agent exited (see agent.log)")
        return json.loads(line)

    async def start(self, sink_url: str) -> None:
        import httpx

        self.db.create()
        for i in range(2):
            port = free_port()
            self.ports.append(port)
            conf = self.work / f"controller-{i}.conf"
            conf.write_text(
                f"[DEFAULT]\ncontrol_exchange = nfvha-soak-{self.run_id}\n"
                f"host = soak-ctl{i}\ncontroller_id = soak-ctl{i}-{self.run_id}\n"
                f"[bus]\ntransport_url = {RABBIT_URL}\n"
                f"[database]\nconnection = {self.db.url}\n"
                f"[api]\nlisten = 127.0.0.1\nport = {port}\n"
                f"[reporters]\nenabled = webhook\n[webhook]\nurl = {sink_url}/soak\n"
                f"[heartbeat]\nspool_dir =\n")
            await self.spawn(f"controller-{i}", "-m", "nfvha.cli.main", "controller",
                             "--config-file", str(conf))
            # one at a time: the first creates the schema
            async with httpx.AsyncClient(timeout=2) as http:
                end = time.monotonic() + 90
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code \
                                == 200:
                            break
                    if self.procs[f"controller-{i}"].returncode is not None \
                            or time.monotonic() > end:
                        raise RuntimeError(f"controller-{i} did not come up "
                                           f"(see {self.work}/controller-{i}.log)")
                    await asyncio.sleep(0.3)
        left, k = self.args.guests, 0
        while left > 0:
            n = min(self.args.guests_per_process, left)
            g = await self.spawn(f"guests-{k}", "-m", "nfvha.compute.simguest",
                                 "--dir", str(self.instances), "--count", str(n),
                                 "--interval-ms", str(self.args.interval_ms),
                                 stdin=True, stdout=True)
            assert g.stdout is not None
            ready = json.loads(await asyncio.wait_for(g.stdout.readline(), 120))["ready"]
            self.uuids.extend(ready)
            left -= n
            k += 1
        conf = self.work / "compute.conf"
        conf.write_text(
            f"[DEFAULT]\ncontrol_exchange = nfvha-soak-{self.run_id}\n"
            f"host = soak-compute-{self.run_id}\n"
            f"[bus]\ntransport_url = {RABBIT_URL}\n"
            f"[heartbeat]\ninstances_dir = {self.instances}\nspool_dir =\n"
            f"min_interval_ms = {min(100, self.args.interval_ms)}\n")
        await self.spawn("agent", str(Path(__file__).resolve()), "--agent-child", str(conf),
                         stdin=True, stdout=True)
        end = time.monotonic() + 120
        while True:
            st = await self.ask_agent("status")
            if st["phases"].get("enabled", 0) == self.args.guests:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"only {st['phases']} of {self.args.guests} guests "
                                   "enabled within 120 s")
            await asyncio.sleep(0.5)

    async def controller_events(self) -> dict[str, Any]:
        """Fault events as each controller tells them (one database: the same
        list), and the faults each one received itself (its /metrics)."""
        import httpx

        out: dict[str, Any] = {"events": None, "event_kinds": {}, "received": []}
        async with httpx.AsyncClient(timeout=10) as http:
            for port in self.ports:
                got = 0.0
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    for line in text.splitlines():
                        if line.startswith("nfvha_faults_received_total{"):
                            got += float(line.rsplit(" ", 1)[1])
                out["received"].append(int(got))
                if out["events"] is None:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        evs = (await http.get(f"http://127.0.0.1:{port}/v1/events",
                                              params={"limit": 10000})).json()
                        out["events"] = len({e["id"] for e in evs})
                        for e in evs:
                            out["event_kinds"][e["kind"]] = out["event_kinds"].get(e["kind"], 0) + 1
        return out

    async def control_hang(self, sink: Any, faults: int, events: int) -> dict[str, Any]:
        """After the count: one guest hangs for real, and the same counting
        path must see one fault at the agent, the controllers and the sink
        (a zero above is then no blind spot)."""
        g = self.procs["guests-0"]
        assert g.stdin is not None and g.stdout is not None
        webhook = len(sink.received)
        g.stdin.write(f"hang {self.uuids[0]}\n".encode())
        await g.stdin.drain()
        await asyncio.wait_for(g.stdout.readline(), 10)  # {"hung": ...}
        got: dict[str, Any] = {}
        end = time.monotonic() + 20
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            st = await self.ask_agent("status")
            ctl = await self.controller_events()
            got = {"agent": st["faults"] - faults,
                   "heartbeat_loss": st["fault_kinds"].get("heartbeat_loss", 0),
                   "controllers": (ctl["events"] or 0) - events,
                   "sink": len(sink.received) - webhook}
            if got["agent"] and got["controllers"] and got["sink"]:
                break
        got["ok"] = got.get("agent") == got.get("controllers") == got.get("sink") == 1
        return got

    async def controllers_see(self) -> list[dict[str, Any]]:
        """What each controller knows of the agent: its host's state (the
        alive fanout reached it) and the instances in the store; a zero
        of faults counts only if the controllers hear the agent at all."""
        import httpx

        out = []
        host = f"soak-compute-{self.run_id}"
        async with httpx.AsyncClient(timeout=10) as http:
            for port in self.ports:
                seen: dict[str, Any] = {"host_state": None, "instances": None}
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    hosts = (await http.get(f"http://127.0.0.1:{port}/v1/hosts")).json()
                    seen["host_state"] = next((h["state"] for h in hosts
                                               if h["host"] == host), None)
                    insts = (await http.get(f"http://127.0.0.1:{port}/v1/instances",
                                            params={"limit": 10000})).json()
                    seen["instances"] = sum(1 for i in insts if i.get("host") == host)
                out.append(seen)
        return out

    def rss(self) -> dict[str, float | None]:
        pids = {name: p.pid for name, p in self.procs.items()}
        pids["driver+sink"] = os.getpid()
        return {name: _round(read_rss_mb(pid)) for name, pid in pids.items()}

    def cpu(self) -> dict[str, float | None]:
        pids = {name: p.pid for name, p in self.procs.items()}
        pids["driver+sink"] = os.getpid()
        return {name: cpu_s(pid) for name, pid in pids.items()}

    async def measure(self, sink: Any) -> dict[str, Any]:
        a = self.args
        windows: list[dict[str, Any]] = []
        series: dict[str, list[tuple[float, float]]] = {}
        await asyncio.sleep(5)  # warm-up
        await self.ask_agent("samples")  # forget the warm-up's samples
        t0 = time.monotonic()
        cpu0 = self.cpu()

        def sample_rss(t: float) -> dict[str, float | None]:
            now = self.rss()
            for name, mb in now.items():
                if mb is not None:
                    series.setdefault(name, []).append((t, mb))
            return now

        start_rss = sample_rss(0.0)
        names = list(start_rss)
        self.say(f"{'min':>5} {'rtt p50':>7} {'p99':>6} {'max':>7} {'late p99':>8} "
                 f"{'samples':>8} {'enabled':>7} {'faults agent/ctl/sink':>21}  RSS MB "
                 + " ".join(f"{n}" for n in names))
        self.say(f"{0.0:>5.1f} {'':>7} {'':>6} {'':>7} {'':>8} {'':>8} {'':>7} {'':>21}  "
                 + " ".join(f"{_f(start_rss[n])}" for n in names))
        total_s = a.minutes * 60
        ok_alive = True
        k = 0
        while k * a.window_s < total_s - 1e-3:
            k += 1  # windows end on a fixed grid: the polling's own time is not lost
            await asyncio.sleep(max(0.0, t0 + min(k * a.window_s, total_s) - time.monotonic()))
            dead = [n for n, p in self.procs.items() if p.returncode is not None]
            if dead:
                ok_alive = False
                self.say(f"process(es) exited: {dead}")
                break
            t = time.monotonic() - t0
            st = await self.ask_agent("samples")
            rtt = quantiles(array("d", Path(st["files"]["rtt_ms"]).read_bytes()))
            late = quantiles(array("d", Path(st["files"]["late_ms"]).read_bytes()))
            for f in st["files"].values():
                Path(f).unlink()
            ctl = await self.controller_events()
            rss = sample_rss(t)
            w = {"t_min": round(t / 60, 2), "rtt_ms": rtt, "late_p99_ms": late["p99"],
                 "enabled": st["phases"].get("enabled", 0), "agent_faults": st["faults"],
                 "agent_fault_kinds": st["fault_kinds"], "controller_events": ctl["events"],
                 "webhook": len(sink.received), "rss_mb": rss}
            windows.append(w)
            self.say(f"{t / 60:>5.1f} {_f(rtt['p50'], 2):>7} {_f(rtt['p99'], 2):>6} "
                     f"{_f(rtt['max'], 1):>7} {_f(late['p99'], 2):>8} {rtt['n']:>8} "
                     f"{w['enabled']:>7} "
                     f"{str(st['faults']) + '/' + str(ctl['events']) + '/' + str(w['webhook']):>21}"
                     "  " + " ".join(f"{_f(rss.get(n))}" for n in names))
        duration = time.monotonic() - t0
        cpu1 = self.cpu()
        await asyncio.sleep(3)  # a fault on its way still counts
        st = await self.ask_agent("status")
        ctl = await self.controller_events()
        seen = await self.controllers_see()
        heard = all(c["host_state"] == "up" and c["instances"] == a.guests for c in seen)
        kinds = st["fault_kinds"]
        p99s = [w["rtt_ms"]["p99"] for w in windows if w["rtt_ms"]["p99"] is not None]
        false_alarms = {
            "agent_faults": st["faults"], "agent_by_kind": kinds,
            "heartbeat_loss": kinds.get("heartbeat_loss", 0),
            "controller_events": ctl["events"], "controller_by_kind": ctl["event_kinds"],
            "received_per_controller": ctl["received"],
            "webhook_deliveries": len(sink.received)}
        cpu_pct = {n: _round(100.0 * (cpu1[n] - cpu0[n]) / duration)
                   if cpu0.get(n) is not None and cpu1.get(n) is not None else None
                   for n in cpu0}
        quiet = st["faults"] == 0 and not ctl["events"] and not sink.received \
            and st["phases"].get("enabled", 0) == a.guests
        control = await self.control_hang(sink, st["faults"], ctl["events"] or 0) \
            if ok_alive else None
        return {
            "minutes": round(duration / 60, 2), "guests": a.guests,
            "interval_ms": a.interval_ms, "controllers": 2, "window_s": a.window_s,
            "cpus": os.cpu_count(), "windows": windows,
            "memory": memory_summary(series), "cpu_pct": cpu_pct,
            "false_alarms": false_alarms, "starved": st["starved"],
            "enabled_at_end": st["phases"].get("enabled", 0),
            "rtt_p99_ms": {"worst_window": max(p99s) if p99s else None,
                           "median_window": pct(p99s, 0.5)},
            "all_alive": ok_alive, "controllers_see": seen,
            "control": control,
            "ok": ok_alive and heard and quiet and control is not None and control["ok"]}

    async def stop(self) -> None:
        for name, p in self.procs.items():
            if p.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                if name == "agent" or name.startswith("guests"):
                    assert p.stdin is not None
                    with contextlib.suppress(Exception):
                        p.stdin.write(b"quit\n")
                        p.stdin.close()
                else:
                    p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                await asyncio.wait_for(p.wait(), 20)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        for log in self.logs:
            log.close()
        self.db.drop()


async def drive(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from nfvha.standins.webhook import WebhookStandin

    soak = Soak(args, out)
    sink = WebhookStandin()
    await sink.start()
    soak.say(f"soak: {args.guests} simulated guests at {args.interval_ms} ms, one compute "
             f"agent, 2 controllers on PostgreSQL + RabbitMQ, {args.minutes:g} min; "
             f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; work dir "
             f"{soak.work}")
    result: dict[str, Any] = {}
    try:
        t = time.monotonic()
        await soak.start(sink.url)
        soak.say(f"all {args.guests} guests enabled {time.monotonic() - t:.1f} s after start")
        result = await soak.measure(sink)
        result["load_average_end"] = round(os.getloadavg()[0], 2)
    finally:
        await soak.stop()
        await sink.stop()
        if args.keep or not result.get("ok"):
            soak.say(f"logs kept in {soak.work}")
        else:
            shutil.rmtree(soak.work, ignore_errors=True)
    return result


def report(r: dict[str, Any], out: Any) -> None:
    fa = r["false_alarms"]
    print(f"\n{r['minutes']:.1f} min; load average at the end {r['load_average_end']}",
          file=out)
    print(f"false alarms: agent {fa['agent_faults']} {fa['agent_by_kind'] or ''} "
          f"(heartbeat_loss {fa['heartbeat_loss']}), controllers {fa['controller_events']} "
          f"(received {fa['received_per_controller']}), webhook sink "
          f"{fa['webhook_deliveries']}; guests enabled at the end {r['enabled_at_end']}; "
          f"'starved' reports {r['starved']} (a guest short of CPU: a host condition, "
          "not a fault)", file=out)
    print("controllers hear the agent: " + ", ".join(
        f"{c['host_state']} with {c['instances']} instances" for c in r["controllers_see"]),
        file=out)
    c = r["control"]
    if c is not None:
        print(f"control, one guest hung after the count: agent {c['agent']} "
              f"(heartbeat_loss {c['heartbeat_loss']}), controllers {c['controllers']}, "
              f"sink {c['sink']}: {'seen everywhere' if c['ok'] else 'NOT SEEN'}", file=out)
    p = r["rtt_p99_ms"]
    print(f"round trip p99 per window: median {_f(p['median_window'], 2)} ms, worst "
          f"{_f(p['worst_window'], 2)} ms", file=out)
    print(f"{'process':>14} {'start MB':>9} {'end MB':>7} {'max MB':>7} {'MB/h':>7} "
          f"{'MB/h 2nd half':>13} {'CPU %':>6}", file=out)
    for name, m in r["memory"].items():
        print(f"{name:>14} {m['start_mb']:>9.1f} {m['end_mb']:>7.1f} {m['max_mb']:>7.1f} "
              f"{_f(m['slope_mb_per_h']):>7} {_f(m['slope_2nd_half_mb_per_h']):>13} "
              f"{_f(r['cpu_pct'].get(name)):>6}", file=out)
    print("(rtt = challenge written -> answer read, the agent's clock, ms; late = how long "
          "after its deadline a challenge left; faults = agent sent / events at the "
          "controllers / webhook deliveries, all false alarms; RSS from /proc; MB/h = "
          "least-squares slope; CPU % of one core over the run)", file=out)
    print("OK" if r["ok"] else "NOT OK", file=out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.agent_child:
        asyncio.run(agent_child(args.agent_child))
        return 0
    why = rabbitmq_unreachable() or pg_unreachable()
    if why:
        print(f"soak: {why}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    out = sys.stderr if args.json else sys.stdout
    result = asyncio.run(drive(args, out))
    report(result, out)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
