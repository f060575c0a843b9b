"""Active/Active: HAProxy with health checks in front of N real HTTP instances.

Deployment (all on 127.0.0.1, all our children): N `nfvha.verify.backend`
processes, each a resource of a real cluster manager (Pacemaker + Corosync, a
private single-node cluster, monitor every 100 ms) — or, where that cannot
run (no root, not installed), nfvha's stand-in supervisor, and Req 5.4.5
says so (where Pacemaker can run but fails to start, the run is an error);
HAProxy (`inter 100 fall 2 rise 2`, `option redispatch`, `retries 3`).
Fault: kill -9 of one instance. Watched: client requests through HAProxy
every 5 ms (keep-alive), HAProxy's `show stat` every 10 ms, HAProxy's log,
a TCP connect to the victim's own port every 10 ms (is it serving again?).
"""
from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .. import restarters
from ..attackers import KillProcess
from ..engine import Phases, Plan, execute, free_port
from ..haproxy import STATE_RE, Haproxy, HaproxyConfig, StatsWatcher
from ..metrics import Measurement
from ..probes import HttpProbe, Probe, ProcessProbe, TcpProbe, env_interval
from ..timeline import Record

NAME = "active-active"


@dataclass
class Options:
    instances: int = 3
    victim: int = 2                  # 1-based: "s2"
    checks: bool = True
    inter_ms: int = 100
    fall: int = 2
    rise: int = 2
    retries: int = 3
    redispatch: bool = True
    cluster_manager: str = "auto"    # auto | pacemaker | supervisor (restarters.make)
    monitor_ms: int = 100            # Pacemaker's monitor interval
    restart_delay_s: float = 1.0     # the stand-in supervisor's restart delay
    kill_signal: int = signal.SIGKILL
    kill_tree: bool = False          # the instance's process and its descendants (WSGI workers)
    probe_interval_s: float = 0.005
    phases: Phases = None            # type: ignore[assignment]
    name: str = NAME                 # the record's scenario name
    # The clients' request through the LB port, and "is the victim serving
    # again" on its own port; defaults: GET / (keep-alive), a TCP connect.
    client_probe: Optional[Callable[[int, float], Probe]] = None     # (lb port, interval)
    serving_probe: Optional[Callable[[int], Probe]] = None           # (victim port)
    name_servers: bool = False       # HAProxy names the server in X-Served-By
    lb_port: Optional[int] = None    # HAProxy's port (default: a free one)

    def __post_init__(self) -> None:
        if self.phases is None:
            # Without checks nothing re-admits "back" in the LB: wait less.
            self.phases = Phases(baseline_s=1.0, observe_s=8.0 if self.checks else 4.0)


async def _wait_http(port: int, path: str, timeout: float = 10.0) -> None:
    """GET path answers 2xx/3xx: serving, not just accepting (a WSGI server
    listens before its worker has loaded the application)."""
    end = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < end:
        s = await HttpProbe("127.0.0.1", port, path, timeout=2.0, expect=range(200, 400)).once()
        if s.ok:
            return
        last = s.detail
        await asyncio.sleep(0.05)
    raise RuntimeError(f"instance on port {port} never served GET {path} ({last})")


def _backend_argv(name: str, port: int) -> List[str]:
    return [sys.executable, "-m", "nfvha.verify.backend", "--port", str(port), "--name", name]


class Instances:
    """N backend instances kept alive by a restarter (Pacemaker or the stand-in).

    Shareable: several runs in one invocation reuse one deployment (a
    Pacemaker cluster takes ~25 s to elect its DC), each with its own HAProxy.
    """

    def __init__(self, n: int = 3, *, cluster_manager: str = "auto", monitor_ms: int = 100,
                 restart_delay_s: float = 1.0,
                 shared: Optional[restarters.SharedCluster] = None,
                 argv_for: Optional[Callable[[str, int], List[str]]] = None,
                 check_path: str = "/", ready_timeout_s: float = 30.0) -> None:
        """`argv_for(name, port)`: the service to run as each instance (absolute path
        first; it must listen on 127.0.0.1:port and answer GET check_path with
        2xx/3xx); default: nfvha's test backend. `ready_timeout_s`: how long an
        instance may take to serve after its start."""
        self.check_path = check_path
        self.ready_timeout_s = ready_timeout_s
        self.shared = shared or restarters.SharedCluster()
        self._own_shared = shared is None
        self.names = [f"s{i}" for i in range(1, n + 1)]
        self.ports = {nm: free_port() for nm in self.names}
        argv_for = argv_for or _backend_argv
        self.argvs: Dict[str, List[str]] = {nm: argv_for(nm, p) for nm, p in self.ports.items()}
        self.restarter = restarters.make(cluster_manager, self.shared,
                                         restart_delay=restart_delay_s, monitor_ms=monitor_ms)
        self.monitor = (f"ocf:heartbeat:anything, monitor every {monitor_ms} ms"
                        if self.restarter.kind == "Pacemaker"
                        else f"restart {restart_delay_s} s after exit")
        self.started = False
        self.cluster_manager = cluster_manager
        self.restart_delay_s = restart_delay_s
        self.fallback_reason: Optional[str] = None
        if self.restarter.kind != "Pacemaker" and cluster_manager == "auto":
            self.fallback_reason = f"Pacemaker cannot run here: {restarters.available()}"

    async def start(self) -> None:
        self.started = True
        try:
            await self.restarter.start(self.argvs)
        except Exception:
            # auto chose Pacemaker because it can run here (restarters.make); if it
            # then fails to start, that is an error to report (exit 2), never a
            # quiet switch to the stand-in that would judge Req 5.4.5 without it.
            await self.restarter.stop()
            raise
        await self.ready()

    async def ready(self, timeout: Optional[float] = None) -> None:
        """Every instance alive and serving (after a previous run's kill, too)."""
        end = time.monotonic() + (timeout or self.ready_timeout_s)
        while time.monotonic() < end:
            if all(self.restarter.pid(n) for n in self.names):
                break
            await asyncio.sleep(0.05)
        await asyncio.gather(*(_wait_http(p, self.check_path, max(1.0, end - time.monotonic()))
                               for p in self.ports.values()))

    async def stop(self) -> None:
        if self.started:
            await self.restarter.stop()
        if self._own_shared:
            await self.shared.stop()


async def run(opts: Optional[Options] = None, instances: Optional[Instances] = None
              ) -> tuple[Record, Measurement]:
    opts = opts or Options()
    own = instances is None
    if instances is None:
        instances = Instances(opts.instances, cluster_manager=opts.cluster_manager,
                              monitor_ms=opts.monitor_ms, restart_delay_s=opts.restart_delay_s)
    record = Record(opts.name, time.monotonic())
    names, ports, restarter = instances.names, instances.ports, instances.restarter
    victim = names[opts.victim - 1]
    lb_port = opts.lb_port or free_port()
    record.facts.update({
        "instances": names, "victim": victim, "checks": opts.checks,
        "health_check": (f"inter {opts.inter_ms} fall {opts.fall} rise {opts.rise}"
                         if opts.checks else "none"),
        "retries": opts.retries, "redispatch": opts.redispatch,
        "cluster_manager": restarter.kind,
        "cluster_monitor": instances.monitor,
        "probe_interval_ms": 1000 * opts.probe_interval_s,
    })
    cfg = HaproxyConfig(lb_port, [(n, ports[n]) for n in names], checks=opts.checks,
                        inter_ms=opts.inter_ms, fall=opts.fall, rise=opts.rise,
                        retries=opts.retries, redispatch=opts.redispatch,
                        check_path=instances.check_path, name_server=opts.name_servers)
    try:
        if not instances.started:
            await instances.start()
        else:
            await instances.ready()
        restarter = instances.restarter
        record.facts["cluster_manager"] = restarter.kind
        record.facts["cluster_monitor"] = instances.monitor
        if instances.fallback_reason:
            record.facts["cluster_manager_note"] = instances.fallback_reason
        async with Haproxy(cfg) as lb:
            watcher = StatsWatcher(lb, interval=0.01)
            await _wait_all_up(lb, names, opts.checks)
            _wire(record, lb, watcher, victim)
            interval = env_interval(opts.probe_interval_s)
            http = (opts.client_probe(lb_port, interval) if opts.client_probe is not None
                    else HttpProbe("127.0.0.1", lb_port, interval=interval))
            http.name = "http"              # the main probe, whatever its request
            direct = (opts.serving_probe(ports[victim]) if opts.serving_probe is not None
                      else TcpProbe("127.0.0.1", ports[victim], interval=0.01,
                                    name=f"tcp:{victim}"))

            def direct_change(ok: bool, t: float, detail: str) -> None:
                if record.fault_at is None:
                    return
                record.mark("instance_serving" if ok else "instance_down", t,
                            f"{victim} port {ports[victim]}: {detail}")
                if ok and not opts.checks and record.first("instance_back") is None:
                    # No LB state to read: "back" is when it serves again.
                    record.mark("instance_back", t, f"{victim} serving again (no health check)")

            def done(r: Record) -> bool:
                return r.first("instance_back") is not None

            attacker = KillProcess(lambda: restarter.pid(victim), sig=opts.kill_signal,
                                   tree=opts.kill_tree)

            async def watch_cluster(stop: asyncio.Event) -> None:
                await restarter.watch(record, victim, stop)

            # Process presence of the victim (Yardstick's "process" monitor), 10 ms.
            proc = ProcessProbe(lambda: restarter.pid(victim), interval=0.01,
                                name=f"process:{victim}")

            def proc_change(ok: bool, t: float, detail: str) -> None:
                if record.fault_at is not None:
                    record.mark("process_back" if ok else "process_gone", t,
                                f"{victim} {detail}")

            plan = Plan(opts.name, [(http, None), (direct, direct_change), (proc, proc_change)],
                        attacker, watchers=[watcher.run, watch_cluster], done=done)
            m = await execute(plan, record, opts.phases)
            fault = record.fault_at or 0.0
            back = record.first("instance_back")
            until = back.t if back is not None else float("inf")
            if not opts.checks:
                serving = record.first("instance_serving")
                until = serving.t if serving is not None else float("inf")
            last = {c: watcher.last_increase(victim, c, fault, until) for c in ("stot", "econ")}
            record.facts["victim_last_routed"] = last["stot"]
            record.facts["victim_last_conn_error"] = last["econ"]
            record.facts["stats_polls"] = watcher.polls
            record.facts["stats_max_gap_ms"] = 1000 * watcher.max_gap
            before = watcher_counts(watcher, victim, fault)
            # Counters just before re-admission: what reached the victim while it was dead.
            after = watcher_counts(watcher, victim, until) if until < float("inf") \
                else watcher.last.get(victim)
            if before is not None and after is not None:
                record.facts["victim_routed_after_fault"] = after.stot - before.stot
                record.facts["victim_conn_errors_after_fault"] = after.econ - before.econ
                record.facts["retries_after_fault"] = after.wretr - before.wretr
                record.facts["redispatches_after_fault"] = after.wredis - before.wredis
    finally:
        if own:
            await instances.stop()
    return record, m


def watcher_counts(w: StatsWatcher, server: str, before: float):
    """The server's counters at the last poll before `before`."""
    found = None
    for t, stats in w.history:
        if t > before:
            break
        found = stats.get(server)
    return found


async def _wait_all_up(lb: Haproxy, names: List[str], checks: bool) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        st = await lb.stats()
        if all(n in st and (st[n].state == "UP" or not checks) for n in names):
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("HAProxy never saw all instances UP")


def _wire(record: Record, lb: Haproxy, w: StatsWatcher, victim: str) -> None:
    """Turns what HAProxy says into the record's events."""
    def on_status(server: str, old: str, new: str, t: float) -> None:
        o, n = old.split(" ")[0], new.split(" ")[0]
        record.mark("lb_status", t, f"{server}: {old} -> {new}")
        if server != victim or record.fault_at is None or o == n:
            return
        if n == "DOWN" and record.first("detected") is None:
            record.mark("detected", t, f"HAProxy stats: {victim} {old} -> {new}")
        elif n == "UP" and record.first("detected") is not None:
            record.mark("instance_back", t, f"HAProxy stats: {victim} {old} -> {new}")

    def on_log(t: float, line: str) -> None:
        m = STATE_RE.search(line)
        if not m or record.fault_at is None:
            return
        # stdout (log) and stderr (warning) both carry it: keep the first.
        kind = "alarm" if m.group(3) == "DOWN" else "alarm_clear"
        if m.group(2) == victim and record.first(kind, after=record.fault_at) is None:
            record.mark(kind, t, line[line.find("Server"):][:160])

    w.on_status = on_status
    lb.on_log = on_log
