"""AMQP clients that fail over between the nodes of a RabbitMQ cluster (py-amqp).

What an OpenStack service does with `transport_url = rabbit://h1,h2,h3`
(oslo.messaging over kombu): stay connected to one node, and when that
connection breaks, connect to the next node and carry on.

* `FailoverProducer`: publishes `{"seq": N}` (persistent) with publisher
  confirms at a steady rate. Every attempt is kept (`attempts`: start, end,
  confirmed or the error, node); a message whose confirm does not come
  (connection lost, nack, timeout) is published again — through the next
  node — until confirmed: at-least-once, so a confirmed message that no
  consumer ever sees is a *lost* message.
* `FailoverConsumer`: consumes with manual acks (record, then ack); a
  broken connection or a consumer cancel from the broker (its queue went
  away) makes it subscribe again, through the next node when the
  connection is gone. Deliveries are kept with their monotonic instant.

All instants are `time.monotonic()`.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from typing import Sequence

import amqp

ERRORS = (amqp.exceptions.AMQPError, OSError, socket.timeout, TimeoutError,
          amqp.exceptions.MessageNacked, ConnectionError)


@dataclasses.dataclass(frozen=True)
class Attempt:
    seq: int
    start: float
    end: float
    ok: bool
    node: str
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Delivery:
    seq: int
    consumer: str
    node: str
    t: float
    redelivered: bool


def _connect(port: int, name: str, timeout: float) -> amqp.Connection:
    c = amqp.Connection(host=f"127.0.0.1:{port}", userid="guest", password="guest",
                        connect_timeout=timeout, heartbeat=0,
                        client_properties={"connection_name": name})
    c.connect()
    return c


def _close(conn: amqp.Connection | None) -> None:
    if conn is None:
        return
    try:
        conn.collect()          # drop the socket without a handshake: the peer may be gone
    except Exception:  # noqa: BLE001
        pass


class _Client:
    def __init__(self, name: str, nodes: Sequence[tuple[str, int]], first: int = 0,
                 connect_timeout: float = 1.0):
        self.name = name
        self.nodes = list(nodes)        # (node name, AMQP port), in failover order
        self.index = first % len(self.nodes)
        self.connect_timeout = connect_timeout
        self.conn: amqp.Connection | None = None
        self.node = ""
        self.switches: list[tuple[float, str, str]] = []   # (t, from node, to node)
        self.errors: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reconnect(self, advance: bool) -> bool:
        """(Re)connects, to the next node when `advance`; False if every node refused."""
        _close(self.conn)
        self.conn = None
        for k in range(len(self.nodes)):
            if advance or k > 0:
                self.index = (self.index + 1) % len(self.nodes)
            node, port = self.nodes[self.index]
            try:
                self.conn = _connect(port, f"{self.name}", self.connect_timeout)
            except ERRORS as exc:
                self.errors.append((time.monotonic(), f"connect {node}: {exc!r}"))
                continue
            if self.node and node != self.node:
                self.switches.append((time.monotonic(), self.node, node))
            self.node = node
            self._on_connected()
            return True
        return False

    def _on_connected(self) -> None:
        pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        _close(self.conn)


class FailoverProducer(_Client):
    def __init__(self, name: str, nodes: Sequence[tuple[str, int]], queue: str,
                 rate_per_s: float = 100.0, first: int = 0, confirm_timeout: float = 1.0,
                 seq_base: int = 0):
        super().__init__(name, nodes, first)
        self.queue = queue
        self.period = 1.0 / rate_per_s
        self.confirm_timeout = confirm_timeout
        self.next_seq = seq_base + 1
        self.attempts: list[Attempt] = []
        self.confirmed: dict[int, float] = {}      # seq -> confirm instant
        self.first_try: dict[int, float] = {}      # seq -> first attempt's start
        self.ch = None

    def _on_connected(self) -> None:
        self.ch = self.conn.channel()
        self.ch.confirm_select()

    def start(self) -> FailoverProducer:
        if not self._reconnect(advance=False):
            raise RuntimeError(f"{self.name}: no node accepts a connection")
        self._thread = threading.Thread(target=self._loop, daemon=True, name=self.name)
        self._thread.start()
        return self

    def _loop(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            seq = self.next_seq
            self.next_seq += 1
            self._publish_until_confirmed(seq)
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                nxt = time.monotonic()   # behind after an outage: no burst to catch up

    def _publish_until_confirmed(self, seq: int) -> None:
        body = json.dumps({"seq": seq})
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.first_try.setdefault(seq, t0)
            node = self.node
            try:
                if self.conn is None or self.ch is None:
                    raise ConnectionError("not connected")
                msg = amqp.Message(body, delivery_mode=2, content_type="application/json")
                # basic_publish_confirm, not basic_publish: py-amqp's
                # basic_publish waits for the confirm only on a connection
                # made with confirm_publish=True, whatever confirm_select said
                self.ch.basic_publish_confirm(msg, exchange="", routing_key=self.queue,
                                              confirm_timeout=self.confirm_timeout)
            except amqp.exceptions.MessageNacked:
                # the broker said no (the queue has no leader yet). A channel
                # opened during the election was seen nacking every message
                # for good (RabbitMQ 3.10.8): a fresh channel, same node
                t1 = time.monotonic()
                self.attempts.append(Attempt(seq, t0, t1, False, node, "MessageNacked"))
                self._stop.wait(0.01)
                try:
                    self.ch.close()
                    self._on_connected()
                except ERRORS:
                    if not self._reconnect(advance=True):
                        self._stop.wait(0.05)
                continue
            except ERRORS as exc:
                t1 = time.monotonic()
                self.attempts.append(Attempt(seq, t0, t1, False, node, type(exc).__name__))
                self.errors.append((t1, f"{node}: {exc!r}"))
                # a confirm that did not come leaves the channel's delivery tags
                # unknowable: a fresh connection, the next node first
                if not self._reconnect(advance=True):
                    self._stop.wait(0.05)
                continue
            t1 = time.monotonic()
            self.attempts.append(Attempt(seq, t0, t1, True, node))
            self.confirmed[seq] = t1
            return


class FailoverConsumer(_Client):
    def __init__(self, name: str, nodes: Sequence[tuple[str, int]], queue: str,
                 first: int = 0, prefetch: int = 50):
        super().__init__(name, nodes, first)
        self.queue = queue
        self.prefetch = prefetch
        self.deliveries: list[Delivery] = []
        self.subscribed: list[tuple[float, str]] = []     # (t, node)
        self.cancelled: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._resubscribe = False

    def _subscribe(self) -> None:
        ch = self.conn.channel()
        ch.basic_qos(0, self.prefetch, False)

        def on_message(msg: amqp.Message) -> None:
            try:
                seq = int(json.loads(msg.body)["seq"])
            except (ValueError, KeyError, TypeError):
                ch.basic_reject(msg.delivery_tag, requeue=False)
                return
            with self._lock:
                self.deliveries.append(Delivery(seq, self.name, self.node, time.monotonic(),
                                                bool(msg.delivery_info.get("redelivered"))))
            ch.basic_ack(msg.delivery_tag)

        def on_cancel(tag: str) -> None:
            self.cancelled.append((time.monotonic(), self.node))
            self._resubscribe = True

        ch.basic_consume(self.queue, callback=on_message, on_cancel=on_cancel)
        self.subscribed.append((time.monotonic(), self.node))

    def start(self) -> FailoverConsumer:
        if not self._reconnect(advance=False):
            raise RuntimeError(f"{self.name}: no node accepts a connection")
        self._subscribe()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=self.name)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.conn is None:
                    raise ConnectionError("not connected")
                if self._resubscribe:
                    self._resubscribe = False
                    self._subscribe()
                self.conn.drain_events(timeout=0.05)
            except socket.timeout:
                continue
            except ERRORS as exc:
                self.errors.append((time.monotonic(), f"{self.node}: {exc!r}"))
                # a channel error (e.g. the queue's node is down) keeps the
                # connection only if it is still open: else the next node
                alive = self.conn is not None and self.conn.connected
                if alive and isinstance(exc, amqp.exceptions.ChannelError):
                    self._resubscribe = True
                    self._stop.wait(0.05)
                    continue
                if self._reconnect(advance=True):
                    self._resubscribe = True
                else:
                    self._stop.wait(0.05)

    def seen(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)
