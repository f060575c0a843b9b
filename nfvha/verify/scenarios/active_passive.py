"""Active/Passive: keepalived VRRP between two network namespaces (Req 5.4.6–5.4.9).

Deployment: the cluster engineer's `VrrpPair` (nfvha/verify/deploy/keepalived.py):
node namespaces a and b on a bridge, a VIP, keepalived 2.2.7 (VRRP v3,
advert_int 0.1 s, both BACKUP + nopreempt, `vrrp_track_process` on the
node's HTTP service), services and keepalived daemons as Pacemaker
resources (100 ms monitor) of the invocation's shared cluster — or plain
children without recovery when Pacemaker cannot run.

Fault: kill -9 of the master's HTTP service. Watched: client GETs to
VIP:8080 from the client namespace every 10 ms (nfvha.verify.backend; a new
connection each time, open loop); keepalived's notify-fifo states and the VIP
add/remove (rtnetlink), both stamped on arrival by VrrpPair; Pacemaker's
alerts for the killed service.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional

from ..attackers import KillProcess
from ..engine import Phases, Plan, execute
from ..metrics import Measurement
from ..probes import HttpProbe, NamespaceSockets, warm_up
from ..restarters import watch_alerts
from ..timeline import Record

NAME = "active-passive"


async def run(cluster, note: Optional[str] = None, *, net: int = 7,
              phases: Optional[Phases] = None) -> tuple[Record, Measurement]:
    """`cluster`: a running PacemakerCluster or None (no recovery: 5.4.8 fails)."""
    from ..deploy import keepalived
    phases = phases or Phases(baseline_s=1.0, observe_s=10.0, settle_s=0.6)
    record = Record(NAME, time.monotonic())
    workdir = Path(tempfile.mkdtemp(prefix="nfvha-vrrp-"))
    pair = keepalived.VrrpPair(workdir, cluster, advert_int=0.1, net=net)
    record.facts.update(pair_facts(
        cluster, note,
        vrrp="keepalived VRRP v3, advert_int 0.1 s, nopreempt, vrrp_track_process"))
    async with running_pair(pair, workdir, record, cluster, victim="node {}") as started:
        plan = Plan(NAME, [(started.http, None)],
                    KillProcess(lambda: pair.service_pid(started.master)),
                    watchers=started.watchers, done=lambda r: r.first("instance_back") is not None)
        m = await execute(plan, record, phases)
    return record, m


# ------------------------------------------------ a keepalived pair's scenario set-up
def pair_facts(cluster, note: Optional[str], **extra: str) -> Dict[str, Any]:
    """The record's facts about a keepalived pair's cluster manager; `extra`
    (the deployment's own) follow in their order, the note last."""
    facts: Dict[str, Any] = {
        "cluster_manager": "Pacemaker" if cluster is not None else "none",
        "cluster_monitor": "ocf:heartbeat:anything, monitor every 100 ms",
        **extra,
    }
    if note:
        facts["cluster_manager_note"] = note
    return facts


Watcher = Callable[[asyncio.Event], Awaitable[None]]


@dataclasses.dataclass
class PairRun:
    """What a scenario on a started keepalived pair plans with."""

    master: str
    backup: str
    http: HttpProbe                 # GET VIP:port from the client namespace every 10 ms
    watchers: List[Watcher]         # keepalived's events, Pacemaker's alerts on the master


@contextlib.asynccontextmanager
async def running_pair(pair, workdir: Path, record: Record, cluster,
                       victim: str) -> AsyncIterator[PairRun]:
    """Starts a `VrrpPair` (or a subclass: `LbPair`), waits for its master,
    notes who is who (`victim`: a format of the master's name), warms the
    client's HTTP probe up through the VIP and gives the watchers; at the
    end the probe's sockets are closed, the pair stopped and `workdir` gone."""
    closers: list = []
    try:
        await asyncio.to_thread(pair.start)
        master = await asyncio.to_thread(pair.wait_master, 15)
        backup = pair.other(master)
        record.facts.update({"victim": victim.format(master), "master": master,
                             "backup": backup, "vip": pair.vip,
                             "instances": [f"node {n}" for n in ("a", "b")]})
        sockets = NamespaceSockets(pair.lan.client.name)
        closers.append(sockets.close)
        http = HttpProbe(pair.vip, pair.port, interval=0.01, timeout=1.0, name="http",
                         sock_factory=sockets, open_loop=True)
        await warm_up(http)

        async def watch_vrrp(stop: asyncio.Event) -> None:
            await follow_vrrp(pair, record, master, backup, stop)

        async def watch_cluster(stop: asyncio.Event) -> None:
            if cluster is not None:
                await watch_alerts(cluster, record, pair.resource(master, "service"), stop)

        yield PairRun(master, backup, http, [watch_vrrp, watch_cluster])
    finally:
        for c in closers:
            c()
        await asyncio.to_thread(pair.stop)
        shutil.rmtree(workdir, ignore_errors=True)


async def follow_vrrp(pair, record: Record, master: str, backup: str,
                      stop: asyncio.Event, period: float = 0.005) -> None:
    """Feeds every VrrpPair event to the record, each exactly once.

    Follows by arrival index (`events_after`), never by position in the
    time-sorted list: a VIP event (stamped by the rtnetlink thread, appended
    by a copy thread ms later) sorts *before* a notify-fifo event appended in
    between, and a positional follower skipped it — that was the backup's
    "missed VIP add"."""
    index = 0
    while True:
        evs, index = pair.events_after(index)
        for e in sorted(evs, key=lambda e: e.mono):
            _on_vrrp(record, e, master, backup)
        if stop.is_set():
            return
        await asyncio.sleep(period)


def _on_vrrp(record: Record, e, master: str, backup: str) -> None:
    """keepalived states / VIP moves → the record's events (stamps from VrrpPair)."""
    fault = record.fault_at
    record.mark("vrrp", e.mono, f"node {e.node} {e.kind} {e.value}")
    if fault is None or e.mono < fault:
        return
    if e.node == master:
        gave_up = (e.kind == "state" and e.value in ("FAULT", "BACKUP")) or \
                  (e.kind == "vip" and e.value == "del")
        if gave_up and _earlier(record, "detected", e.mono):
            record.mark("detected", e.mono, f"keepalived on node {master}: {e.kind} {e.value}")
        if e.kind == "state" and e.value == "FAULT" and record.first("alarm") is None:
            record.mark("alarm", e.mono, f"keepalived notify: node {master} FAULT "
                        "(tracked service gone)")
        det = record.first("detected")
        if (e.kind == "state" and e.value == "BACKUP" and record.first("failover") is not None
                and det is not None and det.t < e.mono
                and record.first("instance_back") is None):
            record.mark("instance_back", e.mono, f"node {master} is the new BACKUP")
    elif e.node == backup:
        if e.kind == "vip" and e.value == "add" and _earlier(record, "failover", e.mono):
            record.mark("failover", e.mono, f"VIP now on node {backup}")
        if e.kind == "state" and e.value == "MASTER" and record.first("backup_master") is None:
            record.mark("backup_master", e.mono, f"node {backup} MASTER")


def _earlier(record: Record, kind: str, t: float) -> bool:
    """No `kind` event yet, or this one is earlier (events of the two sources
    arrive out of order by a few ms; the earliest stamp is the truth)."""
    first = record.first(kind)
    return first is None or t < first.t
