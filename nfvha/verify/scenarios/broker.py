"""tc056, the broker fails: one node of a three-node RabbitMQ cluster killed.

Deployment: `RabbitCluster` (nfvha/verify/deploy/rabbitmq_cluster.py) —
three RabbitMQ 3.10 nodes on 127.0.0.1 with their own names, ports and data
directories, each a Pacemaker resource (ocf:heartbeat:anything, monitor
every 100 ms) of the invocation's shared cluster. One queue declared
through r1 (so r1 holds its leader): a *quorum* queue (Raft, three
members), or — the broken variant `broker-classic` — a classic durable
queue, which lives on r1 alone. (Declared through the victim, r1 by default.)

Clients (`deploy/amqp_failover.py`), as OpenStack services use a
`rabbit://r1,r2,r3` transport: two producers with publisher confirms (on
the victim and the next node, 100 messages/s each; an unconfirmed message is published again
through the next node) and three consumers (on r1, r2, r3; a broken
connection or a cancel makes them subscribe again, through the next node).

Fault: kill -9 of r1's beam.smp (the queue leader's node).

Measured:
- detection: a surviving node logs "rabbit on node r1 down" (Erlang
  distribution saw the connection close); Pacemaker's failed monitor is
  cited too (cm_detected) and is the alarm (its alert).
- failover: the quorum queue elects a new leader on a survivor
  ("candidate -> leader" in its log).
- outage: first → last failed publish attempt (connection lost, confirm not
  within 1 s); precision from the gaps around them.
- recovery: the later of publishers back to baseline latency and r1 rejoined
  ("rabbit on node r1 up" on a survivor) after Pacemaker restarted it.
- messages lost: confirmed but never delivered to any consumer (after a
  drain of up to 15 s once r1 is back). Must be 0.

Requirements: the broker is an Active/Passive component (seed Table 4):
Req 5.4.6 (the queue's backup took over, nothing lost), 5.4.7 (the failure
detected), 5.4.8 (the cluster manager restarted the node and it rejoined),
5.4.9 (alarm); and Req 5.4.10 (the subscribers went on: every confirmed
message consumed).
"""
from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .. import metrics
from ..attackers import KillProcess
from ..engine import Phases, Plan, execute
from ..metrics import Measurement
from ..model import Model
from ..probes import ProcessProbe
from ..restarters import watch_alerts
from ..sal import Sal
from ..timeline import Record, Sample
from ..verdicts import (
    Verdict,
    _ms,
    _since_fault,
    alarm_reported,
    cluster_recovers,
    detection,
    judge_each,
)

NAME = "broker"
BROKEN = "broker-classic"
REQUIREMENTS = ("Req 5.4.6", "Req 5.4.7", "Req 5.4.8", "Req 5.4.9", "Req 5.4.10")


@dataclasses.dataclass
class Options:
    quorum: bool = True
    victim: str = "r1"
    rate_per_s: float = 100.0         # per producer
    phases: Optional[Phases] = None
    drain_s: float = 15.0


async def run(cluster, note: Optional[str] = None, opts: Optional[Options] = None,
              rabbit=None) -> Tuple[Record, Measurement]:
    """`rabbit`: a running RabbitCluster to use (and leave running), else one
    is started for this run (under `cluster`, or unsupervised when None)."""
    from ..deploy.amqp_failover import FailoverConsumer, FailoverProducer
    from ..deploy.rabbitmq_cluster import RabbitCluster
    opts = opts or Options()
    phases = opts.phases or Phases(baseline_s=1.5, observe_s=25.0, settle_s=1.0)
    name = NAME if opts.quorum else BROKEN
    record = Record(name, time.monotonic())
    workdir = Path(tempfile.mkdtemp(prefix="nfvha-broker-"))
    own = rabbit is None
    rc = RabbitCluster(workdir, 3, cluster=cluster) if own else rabbit
    victim = opts.victim
    qtype = "quorum" if opts.quorum else "classic"
    queue = f"nfvha-tc056-{rc.rid}-{qtype}-{time.monotonic_ns() % 1_000_000}"
    record.facts.update({
        "cluster_manager": "Pacemaker" if cluster is not None else "none",
        "cluster_monitor": "ocf:heartbeat:anything, monitor every 100 ms",
        "broker": "RabbitMQ 3.10 (Debian), 3 nodes on 127.0.0.1, classic-config peer discovery",
        "queue": queue, "queue_type": qtype, "victim": f"node {victim}",
        "instances": [f"node {n}" for n in rc.nodes],
        "nodes": {n: {"nodename": nd.nodename, "amqp_port": nd.port}
                  for n, nd in rc.nodes.items()},
        "producers": f"2 × publisher confirms, on {victim} and the next node, "
                     f"{opts.rate_per_s:.0f} messages/s each, republish until confirmed",
        "consumers": "3 (one per node), manual ack, fail over to the next node",
        "main_probe": "publish",
    })
    if note:
        record.facts["cluster_manager_note"] = note
    clients: List = []
    logs = None
    try:
        if own:
            await asyncio.to_thread(rc.start)
        await asyncio.to_thread(_declare, rc, queue, opts.quorum, victim)
        nodes = [(n, nd.port) for n, nd in rc.nodes.items()]
        v = list(rc.nodes).index(victim)
        consumers = [FailoverConsumer(f"consumer-{i + 1}", nodes, queue, first=v + i)
                     for i in range(3)]
        producers = [FailoverProducer(f"producer-{i + 1}", nodes, queue, opts.rate_per_s,
                                      first=v + i, seq_base=i * 10_000_000) for i in range(2)]
        for c in consumers + producers:
            await asyncio.to_thread(c.start)
            clients.append(c)
        logs = rc.follow_logs()
        survivors = [n for n in rc.nodes if n != victim]
        vname = rc.nodes[victim].nodename

        async def watch_logs(stop: asyncio.Event) -> None:
            index = 0
            while True:
                lines, index = logs.after(index)
                for ln in sorted(lines, key=lambda x: x.mono):
                    _on_log(record, ln, victim, vname, survivors, queue)
                if stop.is_set():
                    return
                await asyncio.sleep(0.01)

        async def watch_cluster(stop: asyncio.Event) -> None:
            if cluster is not None:
                await watch_alerts(cluster, record, rc.resource(victim), stop)

        proc = ProcessProbe(lambda: rc.pid(victim), interval=0.01, name=f"process:{victim}")
        plan = Plan(name, [(proc, None)], KillProcess(lambda: rc.pid(victim)),
                    watchers=[watch_logs, watch_cluster],
                    done=lambda r: r.first("instance_back") is not None)
        await execute(plan, record, phases)
        for p in producers:
            await asyncio.to_thread(p.stop)
        tally = await asyncio.to_thread(_drain, producers, consumers, opts.drain_s)
        _add_samples(record, producers, consumers)
        alive = [n for n in survivors if rc.pid(n) is not None] or survivors
        members = await asyncio.to_thread(_queue_members, rc, alive[0], queue)
        record.facts.update(tally)
        record.facts["queue_after"] = members
        record.facts["client_switches"] = [
            f"{c.name}: {a} -> {b} at {_ms(_since_fault(record, t))}"
            for c in producers + consumers for t, a, b in c.switches]
        cm = record.first("cm_detected")
        if cm is not None:
            record.mark("alarm", cm.t, "Pacemaker alert (failed action): " + cm.detail)
        m = metrics.measure(record, probe="publish")
        m = dataclasses.replace(m, lost=int(tally["lost_messages"]))
    finally:
        if logs is not None:
            logs.stop()
        for c in clients:
            await asyncio.to_thread(c.stop)
        if own:
            await asyncio.to_thread(rc.stop)
        shutil.rmtree(workdir, ignore_errors=True)
    return record, m


def _declare(rc, queue: str, quorum: bool, via: str) -> None:
    """The queue, declared through the victim: its leader (quorum) or its only
    home (classic)."""
    import amqp
    c = amqp.Connection(host=f"127.0.0.1:{rc.nodes[via].port}", userid="guest",
                        password="guest", heartbeat=0)
    c.connect()
    try:
        args = {"x-queue-type": "quorum"} if quorum else {"x-queue-type": "classic"}
        c.channel().queue_declare(queue, durable=True, auto_delete=False, arguments=args)
    finally:
        c.close()


def _queue_members(rc, via: str, queue: str) -> str:
    res = rc.ctl(via, "list_queues", "name", "type", "leader", "members", "online", "messages",
                 "--no-table-headers", "--quiet")
    for line in res.stdout.splitlines():
        if line.startswith(queue):
            return " ".join(line.split())
    return f"not listed ({res.stderr.strip()[:200]})"


def _on_log(record: Record, ln, victim: str, vname: str, survivors: List[str],
            queue: str) -> None:
    fault = record.fault_at
    if fault is None or ln.mono < fault - 0.002 or ln.node not in survivors:
        return
    t = ln.text
    if f"rabbit on node '{vname}' down" in t and record.first("detected") is None:
        record.mark("detected", ln.mono, f"node {ln.node}: {t}")
    elif f"node '{vname}' down" in t:
        record.mark("cluster", ln.mono, f"node {ln.node}: {t}")
    elif f"queue '{queue}'" in t and "candidate -> leader" in t and \
            record.first("failover") is None:
        record.mark("failover", ln.mono, f"new leader on node {ln.node}: {t}")
    elif f"rabbit on node '{vname}' up" in t and record.first("detected") is not None \
            and record.first("instance_back") is None:
        record.mark("instance_back", ln.mono, f"node {victim} rejoined the cluster "
                    f"(seen by {ln.node})")


def _drain(producers, consumers, timeout: float) -> Dict[str, object]:
    """Waits until every confirmed message was delivered (or timeout); the tally."""
    confirmed = set()
    for p in producers:
        confirmed |= set(p.confirmed)
    deadline = time.monotonic() + timeout
    while True:
        seen = {d.seq for c in consumers for d in c.seen()}
        lost = confirmed - seen
        if not lost or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    deliveries = [d for c in consumers for d in c.seen()]
    per: Dict[str, int] = {}
    for d in deliveries:
        per[d.consumer] = per.get(d.consumer, 0) + 1
    attempts = [a for p in producers for a in p.attempts]
    return {
        "published": len(confirmed), "consumed": len(seen & confirmed),
        "lost_messages": len(lost), "lost_examples": sorted(lost)[:10],
        "duplicates": len(deliveries) - len({d.seq for d in deliveries}),
        "redelivered": sum(1 for d in deliveries if d.redelivered),
        "per_consumer": per,
        "publish_attempts": len(attempts),
        "publish_failures": sum(1 for a in attempts if not a.ok),
        "republished": sum(1 for a in attempts if not a.ok),
    }


def _add_samples(record: Record, producers, consumers) -> None:
    """Publish attempts (probe "publish": ok = confirmed) and one sample per
    message (probe "mq": at its first attempt, ok = delivered, latency to delivery)."""
    for p in producers:
        for a in p.attempts:
            # a failed attempt is timed when it left (the broker was failing
            # then), a confirmed one at its middle (as the HTTP probes do)
            t = a.start if not a.ok else (a.start + a.end) / 2
            record.add(Sample(t, a.ok, 1000.0 * (a.end - a.start), "publish",
                              f"{p.name} via {a.node}" + ("" if a.ok else f": {a.error}")))
    first: Dict[int, float] = {}
    for c in consumers:
        for d in c.seen():
            if d.seq not in first or d.t < first[d.seq]:
                first[d.seq] = d.t
    for p in producers:
        for seq in p.confirmed:
            t0 = p.first_try[seq]
            if seq in first:
                record.add(Sample(t0, True, 1000.0 * max(0.0, first[seq] - t0), "mq"))
            else:
                record.add(Sample(t0, False, 0.0, "mq", f"message {seq} lost"))


# ------------------------------------------------------------------ verdicts
def takeover(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.6: the queue's backup (a Raft follower) replaced the failed
    leader, clients were served through the survivors, nothing lost."""
    f = r.facts
    lost = int(f.get("lost_messages", 0) or 0)
    fo = r.first("failover", after=r.fault_at or 0.0)
    tally = (f"published {f.get('published')} confirmed, consumed {f.get('consumed')}, "
             f"lost {lost}, republished after a failed attempt {f.get('republished')}")
    if fo is None:
        return False, (f"no backup took over the {f.get('queue_type')} queue when node "
                       f"{f.get('victim', '?').split()[-1]} died (no new leader); client "
                       f"outage {m.outage_ms:.0f} ms (+{m.outage_precision_ms:.0f}); {tally}")
    ok = lost == 0 and m.outage_ms + m.outage_precision_ms <= sal.recovery_ms
    return ok, (f"{fo.detail.split(':')[0]} at {_ms(_since_fault(r, fo.t))}; publishers' outage "
                f"{m.outage_ms:.0f} ms (+{m.outage_precision_ms:.0f} ms), {tally} "
                f"({sal.name} recovery ≤ {sal.recovery_ms:.0f} ms, 0 lost)")


def broker_detects(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.7: the failure was seen (the cluster's peers, Pacemaker's monitor)."""
    return detection(r, m, sal, never="no surviving node reported the victim down",
                     no_cm="; Pacemaker's monitor did not fail", sep=" — ")


def consumers_go_on(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.10: the redundant subscribers kept consuming; every confirmed message consumed."""
    f = r.facts
    lost = int(f.get("lost_messages", 0) or 0)
    per = f.get("per_consumer") or {}
    idle = [c for c in ("consumer-1", "consumer-2", "consumer-3") if not per.get(c)]
    why = (f"consumed per consumer {per}; published {f.get('published')}, consumed "
           f"{f.get('consumed')}, lost {lost} (e.g. {f.get('lost_examples')}), duplicates "
           f"{f.get('duplicates')}, redelivered {f.get('redelivered')}")
    return lost == 0 and not idle, why


CHECKS = {
    "Req 5.4.6": takeover,
    "Req 5.4.7": broker_detects,
    "Req 5.4.8": cluster_recovers,
    "Req 5.4.9": alarm_reported,
    "Req 5.4.10": consumers_go_on,
}


def judge(model: Model, r: Record, m: Measurement, sal: Sal) -> List[Verdict]:
    return judge_each(model, CHECKS, r, m, sal)
