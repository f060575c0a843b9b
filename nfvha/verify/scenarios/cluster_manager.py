"""tc057, the cluster manager fails: corosync killed on one of three nodes (Req 5.4.6–5.4.9).

Deployment: `CorosyncCluster` (nfvha/verify/deploy/corosync_cluster.py) —
three Corosync/Pacemaker nodes in network namespaces on a bridge (knet,
token 1000 ms, votequorum), with a fence device for the namespace nodes
(`cluster-manager`) or without fencing and with no-quorum-policy ignore
(`cluster-manager-nofence`, the broken variant). One resource, an HTTP
service (`nfvha.verify.backend`) in the nodes' shared LAN namespace,
prefers node 1.

Fault: kill -9 of corosync on node 1. Clients: GET 127.0.0.1:<port> in the
LAN namespace every 10 ms (open loop, 0.5 s timeout).

Events: the survivors' corosync log ("A new membership ... Members left: 1",
hires stamps) = detected; Pacemaker's alerts on the survivors: fencing
(= alarm, and the node's copy gone), node lost, the resource's start on a
survivor (= restarted); then the first client answer after that start =
back. At the end: how many copies of the resource run (must be one).
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from ..attackers import KillProcess
from ..engine import Phases, Plan, execute, free_port
from ..metrics import Measurement, measure
from ..model import Model
from ..probes import HttpProbe, NamespaceSockets, pid_alive, warm_up
from ..sal import Sal
from ..timeline import Record
from ..verdicts import Verdict, _ms, _since_fault, alarm_reported, judge_each

NAME = "cluster-manager"


@dataclasses.dataclass
class Options:
    fencing: bool = True
    net: int = 57
    phases: Optional[Phases] = None


def available() -> Optional[str]:
    from ..restarters import available as pcmk
    return pcmk()


async def run(opts: Optional[Options] = None, cluster=None) -> tuple[Record, Measurement]:
    """`cluster`: a running CorosyncCluster to use (left running), else one is
    started (~30 s) and stopped."""
    from ..deploy.corosync_cluster import CorosyncCluster
    opts = opts or Options()
    phases = opts.phases or Phases(baseline_s=1.0, observe_s=20.0, settle_s=1.0)
    record = Record(NAME if opts.fencing else f"{NAME}-nofence", time.monotonic())
    workdir = Path(tempfile.mkdtemp(prefix="nfvha-cm-"))
    own = cluster is None
    c = CorosyncCluster(workdir, 3, net=opts.net) if own else cluster
    record.facts.update({
        "cluster_manager": "Pacemaker",
        "cluster_monitor": "3-node Corosync (knet, token 1000 ms, votequorum) + Pacemaker, "
                           "resource monitor every 100 ms",
        "fencing": "fence agent powering the namespace node off, stonith-enabled, "
                   "no-quorum-policy stop" if opts.fencing else
                   "none (stonith-enabled false, no-quorum-policy ignore)",
        "victim": "corosync on node 1", "instances": [n for n, _ in c.members],
    })
    try:
        if own:
            await asyncio.to_thread(c.start)
        if opts.fencing:
            await asyncio.to_thread(c.enable_fencing)
        port = free_port()
        n1 = c.nodes[0]
        rsc = f"api-{os.getpid() % 10000}-{port}"
        await asyncio.to_thread(
            n1.add_process_resource, rsc,
            [sys.executable, "-m", "nfvha.verify.backend", "--host", "127.0.0.1", "--port",
             str(port), "--name", "api"], 100, c.lan.name)
        await asyncio.to_thread(c.prefer, rsc, 1)
        old = await asyncio.to_thread(n1.wait_running, rsc, 30)
        record.facts.update({"resource": rsc, "resource_pid_before": old})
        sockets = NamespaceSockets(c.lan.name)
        http = HttpProbe("127.0.0.1", port, interval=0.01, timeout=0.5, name="http",
                         sock_factory=sockets, open_loop=True)
        try:
            await warm_up(http, need=5, timeout=15.0, step=0.02)
            survivors = c.nodes[1:]

            async def watch(stop: asyncio.Event) -> None:
                await _follow(record, c, survivors, rsc, stop)

            plan = Plan(record.scenario, [(http, None)],
                        KillProcess(lambda: n1.corosync_pid()), watchers=[watch],
                        done=lambda r: r.first("instance_back") is not None)
            await execute(plan, record, phases)
        finally:
            sockets.close()
        where = await asyncio.to_thread(c.located, rsc, 2)
        record.facts.update({
            "resource_located": where,
            "old_copy_alive": pid_alive(old),
            "copies_running": _copies(port),
        })
        m = measure(record)
        if own is False:
            await asyncio.to_thread(c.nodes[1].remove_resource, rsc)
    finally:
        if own:
            await asyncio.to_thread(c.stop)
        shutil.rmtree(workdir, ignore_errors=True)
    return record, m


def _copies(port: int) -> int:
    """Live processes of the service (its command line names the port)."""
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"nfvha.verify.backend" in argv and str(port).encode() in argv and pid_alive(int(d)):
            n += 1
    return n


async def _follow(record: Record, c, survivors, rsc: str, stop: asyncio.Event) -> None:
    while True:
        fault = record.fault_at
        if fault is not None:
            _scan(record, c, survivors, rsc, fault)
        if stop.is_set():
            return
        await asyncio.sleep(0.01)


def _scan(record: Record, c, survivors, rsc: str, fault: float) -> None:
    if record.first("detected") is None:
        for nd in survivors:
            for t, ring, what, ids in nd.memberships():
                if what == "left" and 1 in ids and t >= fault - 0.01 and \
                        record.first("detected") is None:
                    record.mark("detected", t, f"{nd.node_name}: new membership {ring} "
                                "without node 1")
    for nd in survivors:
        for ev in nd.op_events():
            if ev.mono < fault - 0.01:
                continue
            if ev.kind == "fencing" and record.first("fenced") is None:
                record.mark("fenced", ev.mono, f"Pacemaker alert on {nd.node_name}: node 1 "
                            f"fenced ({ev.task} rc={ev.rc})")
                record.mark("alarm", ev.mono, f"Pacemaker fencing alert on {nd.node_name}")
            if ev.kind == "node" and record.first("cm_detected") is None:
                record.mark("cm_detected", ev.mono, f"Pacemaker node alert on {nd.node_name}")
                if record.first("alarm") is None:
                    record.mark("alarm", ev.mono, f"Pacemaker node alert on {nd.node_name} "
                                "(membership change)")
            if ev.rsc == rsc and ev.task == "start" and ev.rc == 0:
                last = record.all("instance_restarted")
                if not last or ev.mono > last[-1].t + 0.001:
                    record.mark("instance_restarted", ev.mono,
                                f"Pacemaker alert: {rsc} started on {nd.node_name}")
    restarted = record.all("instance_restarted")
    if restarted and record.first("instance_back") is None:
        first = restarted[0]
        ok = [s for s in record.samples if s.probe == "http" and s.ok and s.t > first.t]
        fails_after = [s for s in record.samples if s.probe == "http" and not s.ok
                       and s.t > first.t]
        # back: answered after the start, and (if it failed since) after the last failure
        if ok:
            last_fail = max((s.t for s in fails_after), default=0.0)
            good = [s for s in ok if s.t > last_fail]
            if good and time.monotonic() - good[0].t > 0.3:
                record.mark("instance_back", good[0].t,
                            f"{rsc} serving from a survivor ({first.detail.split()[-1]})")


# ------------------------------------------------------------------ verdicts
def replaced(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.6: a survivor runs the resource instead of the failed node —
    and only it (the failed node's copy gone: fenced)."""
    f = r.facts
    where = f.get("resource_located") or []
    copies = f.get("copies_running")
    start = r.first("instance_restarted", after=r.fault_at or 0.0)
    fenced = r.first("fenced")
    node1 = (f.get("instances") or ["?"])[0]
    tail = (f"client outage {m.outage_ms:.0f} ms (+{m.outage_precision_ms:.0f} ms), "
            f"{m.lost} requests failed; copies running at the end: {copies}, node 1's copy "
            f"{'still alive' if f.get('old_copy_alive') else 'gone'}; fencing: "
            f"{_ms(_since_fault(r, fenced.t if fenced else None))}")
    if start is None or not where or where[0] == node1:
        return False, f"no survivor took the resource over (located: {where}); {tail}"
    ok = copies == 1 and not f.get("old_copy_alive") and \
        m.outage_ms + m.outage_precision_ms <= sal.recovery_ms
    return ok, (f"{start.detail} at {_ms(_since_fault(r, start.t))}; {tail} "
                f"({sal.name} recovery ≤ {sal.recovery_ms:.0f} ms, exactly one copy)")


def membership_detects(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.7: the survivors saw node 1 leave (corosync's membership)."""
    det = r.first("detected", after=r.fault_at or 0.0)
    if det is None:
        return False, "the survivors never formed a membership without node 1"
    return sal.detection_ok(m.detection_ms), (
        f"{det.detail} {_ms(m.detection_ms)} after the kill (token 1000 ms; {sal.name} needs "
        f"< {sal.detection_ms:.0f} ms)")


def recovered(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.8: the cluster manager brought the service back (on a survivor)."""
    start = r.first("instance_restarted", after=r.fault_at or 0.0)
    back = r.first("instance_back", after=r.fault_at or 0.0)
    starts = len(r.all("instance_restarted"))
    if start is None or back is None:
        return False, (f"Pacemaker did not bring the resource back within the observation "
                       f"(start on a survivor: {_ms(_since_fault(r, start.t if start else None))})")
    if r.facts.get("old_copy_alive"):
        return False, (f"not recovered by the cluster manager: node 1's unfenced copy kept "
                       f"answering the clients, outside Pacemaker's control; the copy Pacemaker "
                       f"started on a survivor at {_ms(_since_fault(r, start.t))} leaves "
                       f"{r.facts.get('copies_running')} copy running")
    return sal.recovery_ok(m.recovery_ms), (
        f"Pacemaker started it on a survivor at {_ms(_since_fault(r, start.t))} "
        f"({starts} start{'s' if starts != 1 else ''}), clients served again from "
        f"{_ms(_since_fault(r, back.t))}: recovery {_ms(m.recovery_ms)} ({sal.name} needs "
        f"≤ {sal.recovery_ms:.0f} ms)")


CHECKS = {
    "Req 5.4.6": replaced,
    "Req 5.4.7": membership_detects,
    "Req 5.4.8": recovered,
    "Req 5.4.9": alarm_reported,
}


def judge(model: Model, r: Record, m: Measurement, sal: Sal) -> List[Verdict]:
    return judge_each(model, CHECKS, r, m, sal)
