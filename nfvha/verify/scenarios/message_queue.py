"""Message queue: redundant consumers of one RabbitMQ queue (Req 5.4.10–5.4.12).

Deployment: the cluster engineer's `ConsumerGroup`
(nfvha/verify/deploy/rabbitmq_consumers.py) — three consumer processes on a
durable queue of the local broker, each a Pacemaker resource (100 ms
monitor) of the invocation's shared cluster, or plain children without
recovery when Pacemaker cannot run. A publisher with publisher confirms
sends `{"seq": N}` at 200/s through the whole run.

Fault: kill -9 of one consumer. Measured: every confirmed message is a
sample — sent at its publish instant, ok once some consumer recorded it
(latency = publish → record), failed if it never was (lost); the broker's
consumer count every 10 ms (a drop = the broker saw the consumer go, a
return to 3 = it subscribed again); Pacemaker's alerts.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

from .. import metrics
from ..attackers import KillProcess
from ..engine import Phases, Plan, execute
from ..metrics import Measurement
from ..probes import ProcessProbe
from ..restarters import watch_alerts
from ..timeline import Record, Sample

NAME = "message-queue"


def _timed_publisher(group):
    from ..deploy.rabbitmq_consumers import Publisher

    class TimedPublisher(Publisher):
        """Publisher that also keeps each confirmed message's publish instant."""

        def __init__(self, url: str, queue: str) -> None:
            super().__init__(url, queue)
            self.sent_at: Dict[int, float] = {}

        def publish_one(self) -> int:
            t = time.monotonic()
            seq = super().publish_one()
            if self.published and self.published[-1] == seq:
                self.sent_at[seq] = t
            return seq

    return TimedPublisher(group.url, group.queue)


async def run(cluster, note: Optional[str] = None, *, n: int = 3, victim: str = "c2",
              rate_per_s: float = 200.0, url: Optional[str] = None,
              phases: Optional[Phases] = None) -> tuple[Record, Measurement]:
    from ..deploy import rabbitmq_consumers as rc
    phases = phases or Phases(baseline_s=1.0, observe_s=10.0, settle_s=0.6)
    record = Record(NAME, time.monotonic())
    workdir = Path(tempfile.mkdtemp(prefix="nfvha-mq-"))
    group = rc.ConsumerGroup(workdir, n=n, url=url or rc.DEFAULT_URL, cluster=cluster)
    record.facts.update({
        "cluster_manager": "Pacemaker" if cluster is not None else "none",
        "cluster_monitor": "ocf:heartbeat:anything, monitor every 100 ms",
        "victim": victim, "instances": list(group.ids), "consumers": n,
        "queue": group.queue, "publish_rate_per_s": rate_per_s,
        "main_probe": "mq",        # the report's timeline: one sample per message
    })
    if note:
        record.facts["cluster_manager_note"] = note
    pub = watch = None
    try:
        await asyncio.to_thread(group.start)
        watch = await asyncio.to_thread(group.watch, 0.01)
        pub = await asyncio.to_thread(_timed_publisher, group)
        pub.start(rate_per_s)
        proc = ProcessProbe(lambda: group.consumer_pid(victim), interval=0.01,
                            name=f"process:{victim}")

        async def watch_count(stop: asyncio.Event) -> None:
            seen = 0
            while not stop.is_set():
                ch = list(watch.changes)
                for t, count in ch[seen:]:
                    record.mark("consumers", t, f"{count} consumers on {group.queue}")
                    fault = record.fault_at
                    if fault is None or t < fault:
                        continue
                    if count < n and record.first("detected") is None:
                        record.mark("detected", t, f"broker: consumers {n} -> {count}")
                    if (count == n and record.first("detected") is not None
                            and record.first("instance_back") is None):
                        record.mark("instance_back", t, f"broker: {n} consumers again")
                seen = len(ch)
                await asyncio.sleep(0.005)

        async def watch_cluster(stop: asyncio.Event) -> None:
            if cluster is not None:
                await watch_alerts(cluster, record, group.resource(victim), stop)

        plan = Plan(NAME, [(proc, None)], KillProcess(lambda: group.consumer_pid(victim)),
                    watchers=[watch_count, watch_cluster],
                    done=lambda r: r.first("instance_back") is not None,
                    main_probe=f"process:{victim}")
        await execute(plan, record, phases)
        await asyncio.to_thread(pub.stop)
        loss = await asyncio.to_thread(group.wait_drained, pub.published, 10.0)
        _add_message_samples(record, group, pub)
        cm = record.first("cm_detected")
        if cm is not None:
            record.mark("alarm", cm.t, "Pacemaker alert (failed action): " + cm.detail)
        fault = record.fault_at or 0.0
        before = [d for d in group.deliveries() if d.wall - _offset() < fault]
        record.facts.update({
            "published": loss.published, "consumed": loss.consumed, "lost_messages": len(loss.lost),
            "duplicates": loss.duplicates, "redelivered": loss.redelivered,
            "per_consumer": loss.per_consumer,
            "per_consumer_before_fault": {c: sum(1 for d in before if d.consumer == c)
                                          for c in group.ids},
            "consumers_before_fault": _count_at(watch.changes, fault),
        })
        m = metrics.measure(record, probe="mq")
    finally:
        if pub is not None:
            await asyncio.to_thread(pub.stop)
        if watch is not None:
            watch.stop()
        await asyncio.to_thread(group.stop)
        shutil.rmtree(workdir, ignore_errors=True)
    return record, m


def _offset() -> float:
    return time.time() - time.monotonic()


def _count_at(changes, t: float) -> Optional[int]:
    n = None
    for tt, c in changes:
        if tt > t:
            break
        n = c
    return n


def _add_message_samples(record: Record, group, pub) -> None:
    """One sample per confirmed message: sent at its publish instant, ok if consumed."""
    off = _offset()
    first: Dict[int, float] = {}
    by: Dict[int, str] = {}
    for d in group.deliveries():
        mono = d.wall - off
        if d.seq not in first or mono < first[d.seq]:
            first[d.seq] = mono
            by[d.seq] = d.consumer + (" (redelivered)" if d.redelivered else "")
    for seq in pub.published:
        t = pub.sent_at.get(seq)
        if t is None:
            continue
        if seq in first:
            record.add(Sample(t, True, 1000.0 * max(0.0, first[seq] - t), "mq", by[seq]))
        else:
            record.add(Sample(t, False, 0.0, "mq", f"message {seq} lost"))
