"""tc053, the load balancer fails: HAProxy killed on the VIP's node (Req 5.4.6–5.4.9).

Deployment: `LbPair` (nfvha/verify/deploy/haproxy_vrrp.py) — node
namespaces a and b, HAProxy on each (:8080) in front of one API instance
per node, keepalived VRRP (v3, advert_int 0.1 s, nopreempt) holding the VIP
and tracking the HAProxy process (`vrrp_track_process`); instances, HAProxy
and keepalived are Pacemaker resources (100 ms monitor) of the invocation's
shared cluster. `load-balancer-notrack` is the broken variant: keepalived
without the HAProxy tracking.

Fault: kill -9 of HAProxy on the VRRP master. Clients: GET to VIP:8080 from
the client namespace every 10 ms (open loop, a new connection each time);
each answer names the load balancer that carried it.

Events: keepalived's notify-fifo states and the VIP add/remove (as in the
active/passive scenario: `active_passive.follow_vrrp`), Pacemaker's alerts
for the killed HAProxy (failed monitor = the cluster's alarm too, restart).
"Back" is the old master turned BACKUP — or, when the VIP never moved
(no tracking), HAProxy restarted on it and serving clients again.

Verdicts: the model's active-passive checks (the seed's Table 4 lists
HAProxy under Active/Passive): failover, cm_detects, cluster_recovers,
alarm_reported.
"""
from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from ..attackers import KillProcess
from ..engine import Phases, Plan, execute
from ..metrics import Measurement, measure
from ..model import Model
from ..sal import Sal
from ..timeline import Record
from ..verdicts import Verdict
from ..verdicts import judge as judge_model
from .active_passive import pair_facts, running_pair

NAME = "load-balancer"


@dataclasses.dataclass
class Options:
    track: bool = True
    net: int = 53
    phases: Optional[Phases] = None


def available() -> Optional[str]:
    import os
    if os.geteuid() != 0:
        return "needs root (network namespaces, keepalived)"
    from ..deploy.haproxy_vrrp import available as tools
    return tools()


async def run(cluster, note: Optional[str] = None, opts: Optional[Options] = None
              ) -> tuple[Record, Measurement]:
    from ..deploy.haproxy_vrrp import LbPair
    opts = opts or Options()
    # without tracking nothing ends the observation early: a shorter window
    phases = opts.phases or (Phases(baseline_s=1.0, observe_s=10.0, settle_s=0.6) if opts.track
                             else Phases(baseline_s=1.0, observe_s=4.0, settle_s=0.6))
    record = Record(NAME if opts.track else f"{NAME}-notrack", time.monotonic())
    workdir = Path(tempfile.mkdtemp(prefix="nfvha-lb-"))
    pair = LbPair(workdir, cluster, advert_int=0.1, net=opts.net, track=opts.track)
    record.facts.update(pair_facts(
        cluster, note,
        load_balancers="HAProxy 2.6 (Debian) on nodes a and b, :8080, health checks "
                       "inter 100 fall 2 rise 2 over one API instance per node",
        vrrp="keepalived VRRP v3, advert_int 0.1 s, nopreempt, "
             + ("vrrp_track_process on HAProxy" if opts.track else "NO tracking of HAProxy")))
    async with running_pair(pair, workdir, record, cluster, victim="HAProxy on node {}") as started:

        async def watch_served(stop: asyncio.Event) -> None:
            await _follow_restarted_master(record, started.master, stop)

        plan = Plan(record.scenario, [(started.http, None)],
                    KillProcess(lambda: pair.haproxy_pid(started.master)),
                    watchers=[*started.watchers, watch_served],
                    done=lambda r: r.first("instance_back") is not None)
        await execute(plan, record, phases)
        cm = record.first("cm_detected")
        if cm is not None:
            record.mark("alarm", cm.t, "Pacemaker alert (failed action): " + cm.detail)
        m = measure(record)
    return record, m


async def _follow_restarted_master(record: Record, master: str, stop: asyncio.Event) -> None:
    """Without a failover the VIP stays on the killed HAProxy's node: it is
    back once Pacemaker restarted HAProxy there and a client got an answer
    through it."""
    seen = 0
    while not stop.is_set():
        restarted = record.first("instance_restarted", after=record.fault_at or float("inf"))
        if restarted is not None and record.first("instance_back") is None:
            samples = record.samples[seen:]
            seen += len(samples)
            for s in samples:
                if s.probe == "http" and s.ok and s.t > restarted.t and \
                        s.detail.endswith(f"node-{master}"):
                    record.mark("instance_back", s.t,
                                f"HAProxy on node {master} restarted and serving ({s.detail})")
                    break
        await asyncio.sleep(0.01)


def judge(model: Model, r: Record, m: Measurement, sal: Sal) -> List[Verdict]:
    return judge_model(model, "active-passive", r, m, sal)
