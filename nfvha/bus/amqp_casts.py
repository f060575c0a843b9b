"""Controller -> compute casts over RabbitMQ with an asyncio AMQP client.

Why not oslo.messaging for this direction: its RPC server hands every
message from a polling thread to a worker thread and then (our bridge) to
the event loop, and after each message it polls again with timeouts of
1, 2, 4, ... ms. Measured on the 2-core machines: 2.1–2.3 ms CPU per
received cast in each compute agent, against 0.5–0.6 ms with aio-pika
(bench/compute_cast_cpu.py, docs/dev/contracts.md). A server-group broadcast to ten
compute agents costs every one of them a message, so on a shared host the
difference is the p99. Calls and casts *to the controller* and Nova's
notifications stay on oslo.messaging.

Wire (nobody else speaks it, so it is ours):
- exchange ``<prefix>-compute-casts`` (direct, routing key = compute host)
  and ``<prefix>-compute-fanout`` (fanout), both non-durable;
- one queue per compute host, ``<prefix>-compute-casts.<host>``, bound to
  both. Deliveries are best effort, like StarlingX's server-group messages:
  a message older than ``MESSAGE_TTL_MS`` is stale and dropped by the broker,
  the backlog of a stopped agent is bounded (oldest dropped first), and the
  queue of an agent gone for ``QUEUE_EXPIRES_MS`` is deleted;
- body: JSON ``{"method": str, "args": {...}}``.

Connection: the hosts of the oslo transport URL in turn, with backoff,
redeclaring the exchanges, queue and consumer after every reconnect. Casts
made while disconnected wait in a bounded buffer (oldest dropped first).
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from nfvha.bus.amqp_connect import safe_url
from nfvha.bus.endpoint import bus_method

LOG = logging.getLogger(__name__)

MESSAGE_TTL_MS = 10_000
QUEUE_EXPIRES_MS = 600_000
QUEUE_MAX_LENGTH = 10_000
PENDING_MAX = 10_000


class ComputeCasts:
    """Publishes casts to compute hosts; serves one compute host's casts.

    `role` names the exchanges and queues (``<prefix>-<role>-casts``,
    ``-fanout``, queue ``<prefix>-<role>-casts.<name>``): the compute agents'
    ``alive`` fanout to every controller takes the same path with role
    ``controllers`` (each controller consumes its own queue)."""

    def __init__(self, urls: Sequence[str], prefix: str, *,
                 ssl_context: ssl.SSLContext | None = None, role: str = "compute") -> None:
        self._urls = list(urls)
        self._direct_name = f"{prefix}-{role}-casts"
        self._fanout_name = f"{prefix}-{role}-fanout"
        self._queue_prefix = f"{prefix}-{role}-casts."
        self._ssl = ssl_context
        self._served: tuple[str, object] | None = None
        self._pending: deque[tuple[str, str, bytes, float | None]] = deque()
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._consuming = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()  # bodies, in arrival order
        self._tasks: list[asyncio.Task[None]] = []
        self._connection: AbstractConnection | None = None
        self._exchanges: dict[str, Any] = {}
        self._declared: set[str] = set()  # host queues declared on this connection
        self._closing = False
        self.counters = {"published": 0, "dropped": 0, "received": 0, "bad": 0,
                         "reconnects": 0}

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._run_connection(), name="amqp-casts-conn"),
                       asyncio.create_task(self._run_publisher(), name="amqp-casts-pub"),
                       asyncio.create_task(self._run_dispatcher(), name="amqp-casts-disp")]

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self._connected.is_set()

    async def stop(self) -> None:
        self._closing = True
        # what is already buffered goes out first, if the broker is there
        if self._pending and self._connected.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), 2.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def _drained(self) -> None:
        while self._pending:
            await asyncio.sleep(0.01)

    # -- publishing ---------------------------------------------------------------
    def cast(self, host: str | None, method: str, kwargs: dict[str, Any],
             ttl_s: float | None = None) -> None:
        """Queue one cast (``host=None``: every compute). Returns at once; casts
        leave in the order they were made. `ttl_s`: the broker drops it when
        it waited longer in a queue (a stale sign of life misleads)."""
        body = json.dumps({"method": method, "args": kwargs}).encode()
        if len(self._pending) >= PENDING_MAX:
            self._pending.popleft()
            self.counters["dropped"] += 1
            LOG.warning("compute casts: broker unreachable, buffer full: oldest cast dropped")
        if host is None:
            self._pending.append((self._fanout_name, "", body, ttl_s))
        else:
            self._pending.append((self._direct_name, host, body, ttl_s))
        self._wake.set()

    async def _run_publisher(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._connected.wait()
                exchange_name, key, body, ttl_s = self._pending[0]
                # set with _connected, cleared with it: both in one step of the loop
                exchange = self._exchanges[exchange_name]
                try:
                    if key and key not in self._declared:
                        assert self._channel is not None
                        await self._declare_queue(self._channel, key)
                    # mandatory=False: a fanout that nobody hears yet (no
                    # controller up) is dropped by the broker, as intended,
                    # instead of coming back as a return nobody handles
                    # (aiormq logs each one as an ERROR)
                    await exchange.publish(
                        aio_pika.Message(body, content_type="application/json",
                                         expiration=ttl_s),
                        routing_key=key, mandatory=False)
                except Exception as exc:  # connection lost mid-publish: retry after reconnect
                    failures += 1
                    if failures < 3:
                        LOG.warning("compute cast not published (%s); retrying", exc)
                        await asyncio.sleep(0.1 * failures)
                        continue
                    LOG.error("compute cast dropped after %d attempts: %s", failures, exc)
                    self.counters["dropped"] += 1
                else:
                    self.counters["published"] += 1
                failures = 0
                self._pending.popleft()

    # -- serving ------------------------------------------------------------------
    async def serve(self, host: str, endpoint: object, timeout: float = 10.0) -> None:
        """Deliver this host's casts (and the fanout) to `endpoint`'s methods.

        Returns once the consumer is in place (so a cast made next reaches
        it), or after `timeout` with the broker still away: the consumer is
        then declared when the connection comes."""
        self._served = (host, endpoint)
        if self._channel is not None and self._connected.is_set():
            await self._declare_consumer(self._channel)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._consuming.wait(), timeout)
        if not self._consuming.is_set():
            LOG.warning("compute casts: broker unreachable; %s will consume once it is there",
                        host)

    async def _declare_queue(self, channel: AbstractChannel, host: str) -> Any:
        # Both ends declare it (same arguments, or RabbitMQ refuses): a cast
        # to an agent that is still starting waits for it (up to the TTL)
        # instead of being dropped as unroutable.
        queue = await channel.declare_queue(
            self._queue_prefix + host, durable=False, auto_delete=False,
            arguments={"x-message-ttl": MESSAGE_TTL_MS, "x-expires": QUEUE_EXPIRES_MS,
                       "x-max-length": QUEUE_MAX_LENGTH, "x-overflow": "drop-head"})
        await queue.bind(self._exchanges[self._direct_name], routing_key=host)
        await queue.bind(self._exchanges[self._fanout_name])
        self._declared.add(host)
        return queue

    async def _declare_consumer(self, channel: AbstractChannel) -> None:
        assert self._served is not None
        queue = await self._declare_queue(channel, self._served[0])
        # no_ack: best effort anyway, and an ack per message is CPU we measured.
        # Consumed on aio-pika's underlying aiormq channel: aio-pika's own
        # consume wraps every message in an IncomingMessage and one more task,
        # and only the body is used (yappi, a controller taking `alive`s: a
        # quarter of its Python calls per message, 795 -> 603)
        underlay = await channel.get_underlay_channel()
        await underlay.basic_consume(queue.name, self._received, no_ack=True)
        self._consuming.set()

    async def _received(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(message.body)

    async def _run_dispatcher(self) -> None:
        # One message at a time, in arrival order: per-destination order holds.
        while True:
            body = await self._inbox.get()
            self.counters["received"] += 1
            try:
                await self._dispatch(body)
            except Exception:
                LOG.exception("compute cast failed")

    async def _dispatch(self, body: bytes) -> None:
        try:
            doc = json.loads(body)
            method, args = doc["method"], doc["args"]
            if not isinstance(method, str) or not isinstance(args, dict):
                raise TypeError("method must be a string, args a mapping")
        except (ValueError, KeyError, TypeError) as exc:
            self.counters["bad"] += 1
            LOG.warning("compute cast dropped: malformed (%s)", exc)
            return
        assert self._served is not None
        endpoint = self._served[1]
        func = bus_method(endpoint, method)
        if func is None:
            self.counters["bad"] += 1
            LOG.warning("compute cast dropped: no method %r", method)
            return
        result = func(**args)
        if inspect.isawaitable(result):
            await result

    # -- connection ---------------------------------------------------------------
    async def _run_connection(self) -> None:
        delay = 0.2
        turn = 0
        connected_before = False
        while True:
            url = self._urls[turn % len(self._urls)]
            turn += 1
            closed = asyncio.Event()
            conn: AbstractConnection | None = None
            try:
                conn = await aio_pika.connect(url, ssl_context=self._ssl, timeout=5)
                conn.close_callbacks.add(lambda *_, ev=closed: ev.set())
                channel = await conn.channel(publisher_confirms=False)
                channel.close_callbacks.add(lambda *_, ev=closed: ev.set())
                self._channel = channel
                self._connection = conn
                self._declared = set()
                self._exchanges = {
                    self._direct_name: await channel.declare_exchange(
                        self._direct_name, aio_pika.ExchangeType.DIRECT, durable=False),
                    self._fanout_name: await channel.declare_exchange(
                        self._fanout_name, aio_pika.ExchangeType.FANOUT, durable=False),
                }
                if self._served is not None:
                    await self._declare_consumer(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._closing:
                    LOG.warning("compute casts: %s unreachable (%s); retrying in %.1f s",
                                safe_url(url), exc, delay)
                self._exchanges = {}
                if conn is not None:  # connected, then a declaration failed: close it
                    with contextlib.suppress(Exception):
                        await conn.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if connected_before:
                self.counters["reconnects"] += 1
                LOG.info("compute casts: connected again, to %s", safe_url(url))
            connected_before = True
            delay = 0.2
            turn -= 1  # stay on this host while it works
            self._connected.set()
            self._wake.set()
            await closed.wait()
            self._connected.clear()
            self._consuming.clear()
            self._exchanges = {}
            if not self._closing:
                LOG.warning("compute casts: connection to %s lost; reconnecting", safe_url(url))
            with contextlib.suppress(Exception):
                await conn.close()
            turn += 1  # the next host first
            await asyncio.sleep(delay)

