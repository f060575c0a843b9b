"""Message queue: redundant consumers of one durable RabbitMQ queue (sync API).

Req 5.4.10-5.4.12. Pieces (py-amqp, which oslo.messaging/kombu pull in):

* `ConsumerGroup`: N consumer *processes* on a durable queue
  `nfvha-verify-<rid>` of the local broker (unique per run, deleted by
  `stop()`). Each consumer records a message (one O_APPEND write: survives
  kill -9 because it is in the kernel before the ack is sent) and then
  acks it, so every acked message is on record and an unacked one comes
  back with `redelivered=True`.
* Supervision: with a `PacemakerCluster` each consumer is an
  ocf:heartbeat:anything resource (100 ms monitor): a killed consumer is
  restarted by the cluster manager and subscribes again. Without a
  cluster they are plain children (no recovery).
* A publisher with publisher confirms and sequence numbers (persistent
  messages, body `{"seq": N}`); `published` holds every confirmed seq.
* The consumer count the broker sees, read with a passive queue_declare
  on a dedicated connection (~1 ms on loopback; `rabbitmqctl
  list_consumers` takes ~0.5 s and the management plugin is not enabled
  here). `ConsumerCountWatch` samples it every 10 ms and keeps the changes.

Consumer entry point (what the resources run):
`python -m nfvha.verify.deploy.rabbitmq_consumers consume --url URL --queue Q
--id ID --record FILE`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlparse

import amqp

from nfvha.verify.deploy import netns
from nfvha.verify.deploy.pacemaker import PacemakerCluster
from nfvha.verify.deploy.procfs import stop_all

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"


def connect(url: str = DEFAULT_URL, name: str = "nfvha-verify") -> amqp.Connection:
    """An open py-amqp connection from an amqp:// or rabbit:// URL."""
    u = urlparse(url)
    vhost = unquote(u.path[1:]) if u.path and u.path != "/" else "/"
    conn = amqp.Connection(
        host=f"{u.hostname or '127.0.0.1'}:{u.port or 5672}",
        userid=unquote(u.username or "guest"), password=unquote(u.password or "guest"),
        virtual_host=vhost or "/", connect_timeout=5,
        client_properties={"connection_name": name}, heartbeat=0)
    conn.connect()
    return conn


@dataclasses.dataclass
class Delivery:
    seq: int
    consumer: str
    pid: int
    redelivered: bool
    wall: float


@dataclasses.dataclass
class LossReport:
    published: int            # confirmed by the broker
    consumed: int             # distinct sequences on record
    lost: list[int]           # confirmed but never consumed
    duplicates: int           # deliveries beyond the first per sequence
    redelivered: int          # deliveries flagged redelivered by the broker
    per_consumer: dict[str, int]


class Publisher:
    """Publishes `{"seq": N}` with publisher confirms; `published` = confirmed seqs."""

    def __init__(self, url: str, queue: str):
        self.conn = connect(url, "nfvha-verify-publisher")
        self.ch = self.conn.channel()
        self.ch.confirm_select()
        self.queue = queue
        self.next_seq = 1
        self.published: list[int] = []
        self.failed: list[int] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def publish_one(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        msg = amqp.Message(json.dumps({"seq": seq}), delivery_mode=2,
                           content_type="application/json")
        try:
            # basic_publish_confirm waits for the broker's confirm (nack raises);
            # plain basic_publish waits only on a confirm_publish=True connection
            self.ch.basic_publish_confirm(msg, exchange="", routing_key=self.queue,
                                          confirm_timeout=5)
            self.published.append(seq)
        except Exception:  # noqa: BLE001 - a not-confirmed message is not counted as sent
            self.failed.append(seq)
        return seq

    def publish(self, count: int) -> None:
        for _ in range(count):
            self.publish_one()

    def start(self, rate_per_s: float) -> None:
        """Publishes in a background thread at about `rate_per_s` until stop()."""
        period = 1.0 / rate_per_s

        def loop() -> None:
            nxt = time.monotonic()
            while not self._stop.is_set():
                self.publish_one()
                nxt += period
                delay = nxt - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)

        self._thread = threading.Thread(target=loop, daemon=True, name="mq-publisher")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


class ConsumerCountWatch:
    """Samples the broker's consumer count every `interval` s (passive declare).

    changes: list of (time.monotonic(), consumer_count), one entry per change.
    """

    def __init__(self, url: str, queue: str, interval: float = 0.01):
        self.url, self.queue, self.interval = url, queue, interval
        self.changes: list[tuple[float, int]] = []
        self.error: str | None = None      # the last error seen (the watch goes on)
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The AMQP connection_name (unique per queue: findable in the broker)."""
        return f"nfvha-verify-watch-{self.queue}"

    def start(self) -> ConsumerCountWatch:
        conn = connect(self.url, self.name)
        ch = conn.channel()

        def loop() -> None:
            nonlocal conn, ch
            last = None
            try:
                while not self._stop.is_set():
                    try:
                        _q, _msgs, consumers = ch.queue_declare(self.queue, passive=True)
                    except amqp.exceptions.NotFound as exc:
                        self.error = repr(exc)     # queue deleted: nothing left to watch
                        return
                    except (amqp.exceptions.AMQPError, OSError) as exc:
                        # A dropped connection (a loaded machine, a missed
                        # heartbeat) must not end the watch silently: a test
                        # would then wait in vain for the count to come back.
                        self.error = repr(exc)
                        try:
                            conn.close()
                        except Exception:  # noqa: BLE001
                            pass
                        self._stop.wait(0.05)
                        try:
                            conn = connect(self.url, self.name)
                            ch = conn.channel()
                            self.reconnects += 1
                        except (amqp.exceptions.AMQPError, OSError):
                            pass                   # next round tries again
                        continue
                    t = time.monotonic()
                    if consumers != last:
                        self.changes.append((t, consumers))
                        last = consumers
                    self._stop.wait(self.interval)
            finally:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

        self._thread = threading.Thread(target=loop, daemon=True, name="mq-consumer-watch")
        self._thread.start()
        return self

    def current(self) -> int | None:
        return self.changes[-1][1] if self.changes else None

    def first(self, predicate, since: float) -> tuple[float, int] | None:
        for t, n in list(self.changes):
            if t >= since and predicate(n):
                return (t, n)
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


class ConsumerGroup:
    """N redundant consumer processes of one durable queue; see module doc.

    ::

        g = ConsumerGroup(tmp, n=3, cluster=cluster).start()
        pub = g.publisher(); pub.start(rate_per_s=200)
        t = g.kill_consumer("c1")
        ...; pub.stop(); g.wait_drained(pub.published, 10)
        report = g.check(pub.published)      # report.lost == []
        g.stop()
    """

    def __init__(self, workdir: Path, n: int = 3, url: str = DEFAULT_URL,
                 cluster: PacemakerCluster | None = None, prefetch: int = 20,
                 work_ms: float = 2.0, monitor_ms: int = 100, queue: str | None = None):
        self.workdir = Path(workdir)
        self.n = n
        self.url = url
        self.cluster = cluster
        self.prefetch = prefetch
        self.work_ms = work_ms
        self.monitor_ms = monitor_ms
        self.rid = netns.run_id()
        self.queue = queue or f"nfvha-verify-{self.rid}"
        self.ids = [f"c{i + 1}" for i in range(n)]
        self._procs: dict[str, subprocess.Popen] = {}
        self._admin: amqp.Connection | None = None

    def resource(self, cid: str) -> str:
        return f"mq-{self.rid}-{cid}"

    def record_file(self, cid: str) -> Path:
        return self.workdir / f"{self.queue}-{cid}.records"

    def consumer_argv(self, cid: str) -> list[str]:
        return [sys.executable, "-m", "nfvha.verify.deploy.rabbitmq_consumers", "consume",
                "--url", self.url, "--queue", self.queue, "--id", cid,
                "--record", str(self.record_file(cid)), "--prefetch", str(self.prefetch),
                "--work-ms", str(self.work_ms)]

    def start(self, timeout: float = 30) -> ConsumerGroup:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._admin = connect(self.url, "nfvha-verify-admin")
        ch = self._admin.channel()
        ch.queue_declare(self.queue, durable=True, auto_delete=False)
        try:
            for cid in self.ids:
                self.record_file(cid).write_bytes(b"")
                self._launch(cid)
            self.wait_consumers(self.n, timeout)
            if self.cluster is not None:
                # Past the wall-clock second of each start: Pacemaker 2.1.5
                # ignores a monitor failure stamped in the same second as the
                # start (the resource stays "Started" with a dead process).
                for cid in self.ids:
                    self.cluster.wait_running(self.resource(cid), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, cid: str) -> None:
        argv = self.consumer_argv(cid)
        if self.cluster is not None:
            env = {"PYTHONPATH": str(Path(__file__).resolve().parents[3])}
            self.cluster.add_process_resource(self.resource(cid), argv,
                                              monitor_ms=self.monitor_ms, env=env,
                                              logfile=self.workdir / f"{cid}.log")
        else:
            log = open(self.workdir / f"{cid}.log", "ab")
            self._procs[cid] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL)
            log.close()

    def stop(self) -> None:
        """Stops consumers (removing their resources) and deletes the queue."""
        if self.cluster is not None:
            for cid in self.ids:
                try:
                    self.cluster.remove_resource(self.resource(cid))
                except Exception:  # noqa: BLE001 - cleanup goes on regardless
                    pass
        stop_all(self._procs.values())
        try:
            conn = self._admin if self._admin is not None else connect(self.url)
            conn.channel().queue_delete(self.queue)
            conn.close()
        except Exception:  # noqa: BLE001
            pass
        self._admin = None

    def __enter__(self) -> ConsumerGroup:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------- helpers
    def publisher(self) -> Publisher:
        return Publisher(self.url, self.queue)

    def watch(self, interval: float = 0.01) -> ConsumerCountWatch:
        return ConsumerCountWatch(self.url, self.queue, interval).start()

    def queue_counts(self) -> tuple[int, int]:
        """(messages ready, consumers) as the broker reports them now."""
        assert self._admin is not None
        _q, msgs, consumers = self._admin.channel().queue_declare(self.queue, passive=True)
        return msgs, consumers

    def wait_consumers(self, n: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue_counts()[1] == n:
                return time.monotonic()
            time.sleep(0.02)
        raise TimeoutError(f"{self.queue}: not {n} consumers after {timeout} s "
                           f"(have {self.queue_counts()[1]})")

    def consumer_pid(self, cid: str) -> int | None:
        if self.cluster is not None:
            return self.cluster.resource_pid(self.resource(cid))
        p = self._procs.get(cid)
        return p.pid if p is not None and p.poll() is None else None

    def kill_consumer(self, cid: str, sig: int = signal.SIGKILL) -> float:
        """Kills a consumer process; returns time.monotonic() before the signal."""
        pid = self.consumer_pid(cid)
        if pid is None:
            raise RuntimeError(f"consumer {cid} is not running")
        t = time.monotonic()
        os.kill(pid, sig)
        return t

    def deliveries(self) -> list[Delivery]:
        out = []
        for cid in self.ids:
            try:
                lines = self.record_file(cid).read_text().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                f = line.split()
                if len(f) != 5:
                    continue  # a torn last line of a killed consumer (never acked)
                out.append(Delivery(seq=int(f[0]), consumer=f[1], pid=int(f[2]),
                                    redelivered=f[3] == "1", wall=float(f[4])))
        return out

    def check(self, published: Sequence[int]) -> LossReport:
        ds = self.deliveries()
        seen: dict[int, int] = {}
        per: dict[str, int] = {}
        for d in ds:
            seen[d.seq] = seen.get(d.seq, 0) + 1
            per[d.consumer] = per.get(d.consumer, 0) + 1
        return LossReport(
            published=len(published), consumed=len(seen),
            lost=sorted(set(published) - set(seen)),
            duplicates=sum(c - 1 for c in seen.values()),
            redelivered=sum(1 for d in ds if d.redelivered), per_consumer=per)

    def wait_drained(self, published: Sequence[int], timeout: float) -> LossReport:
        """Waits until every published sequence is on record (or timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            rep = self.check(published)
            if not rep.lost or time.monotonic() >= deadline:
                return rep
            time.sleep(0.05)


# ------------------------------------------------------------------ consumer
def consume(url: str, queue: str, cid: str, record: Path, prefetch: int,
            work_ms: float) -> int:
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    conn = connect(url, f"nfvha-verify-consumer-{cid}")
    ch = conn.channel()
    ch.basic_qos(0, prefetch, False)
    pid = os.getpid()

    def on_message(msg: amqp.Message) -> None:
        try:
            seq = int(json.loads(msg.body)["seq"])
        except (ValueError, KeyError, TypeError):
            ch.basic_reject(msg.delivery_tag, requeue=False)   # not ours: drop, never loop
            return
        if work_ms:
            time.sleep(work_ms / 1000)                         # "processing"
        redelivered = 1 if msg.delivery_info.get("redelivered") else 0
        # record first (one write(2): in the kernel even if we die now), then ack
        os.write(fd, f"{seq} {cid} {pid} {redelivered} {time.time():.6f}\n".encode())
        ch.basic_ack(msg.delivery_tag)

    ch.basic_consume(queue, callback=on_message)
    stop = {"now": False}

    def on_term(_s, _f) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop["now"]:
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            continue
        except OSError:
            if stop["now"]:
                break
            raise
    conn.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nfvha.verify.deploy.rabbitmq_consumers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--url", default=DEFAULT_URL)
    c.add_argument("--queue", required=True)
    c.add_argument("--id", required=True)
    c.add_argument("--record", required=True, type=Path)
    c.add_argument("--prefetch", type=int, default=20)
    c.add_argument("--work-ms", type=float, default=2.0)
    a = ap.parse_args(argv)
    return consume(a.url, a.queue, a.id, a.record, a.prefetch, a.work_ms)


if __name__ == "__main__":
    sys.exit(main())
