"""oslo.messaging RPC over RabbitMQ, bridged to asyncio.

oslo.messaging is blocking: its servers run endpoint methods in a thread
pool (threading executor) and its clients block until the broker answers.
The bridge:
- incoming: oslo's worker thread hands the endpoint coroutine to our event
  loop (run_coroutine_threadsafe) and waits for its result, so endpoint
  code runs on the loop like everything else;
- outgoing calls run in a private thread pool (run_in_executor), so the
  event loop never blocks on the broker;
- casts go through publisher threads: the caller returns at once and casts
  to one destination (the controller topic, one compute host, the fanout)
  leave in the order they were made — each destination always uses the same
  thread; different destinations go out in parallel, so a server-group
  broadcast to ten compute hosts does not wait for ten publishes in a row.

Uses the global ``oslo_config.cfg.CONF``: oslo.messaging 18.3.1 looks up
option groups (oslo_messaging_tracing, ...) that exist only there: with a
private ``ConfigOpts`` its first call fails with "no such option".
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import oslo_messaging
from oslo_config import cfg
from oslo_messaging._drivers import amqpdriver

from nfvha.bus import DEFAULT_PREFIX
from nfvha.bus.endpoint import bus_method
from nfvha.bus.errors import BusTimeout, NoServer, RemoteError

LOG = logging.getLogger(__name__)

CONTROLLER_FANOUT_TTL_S = 5.0

# oslo's RPC servers wait for the next message in steps of 1, 2, 4, ... ms
# after each one, up to 5 s, waking each time to run the operations other
# threads queued and a heartbeat check: at 14 server-group broadcasts a
# second that was six wake-ups per message in the controller, a fifth of
# its Python calls per broadcast (yappi: 2614 -> 2044). An RPC server has
# no such operations (it acks each request as it reads it), and a message
# ends the wait the moment it arrives: its steps start at this instead.
# Notification listeners keep theirs: they ack a notification only after
# handling it, through those operations, and a controller killed before
# the ack makes RabbitMQ give the notification to another (told twice).
OSLO_RPC_IDLE_POLL_MIN_S = 0.05


class _AtLeast:
    """``RpcAMQPListener._current_timeout`` (oslo.messaging 18.3: the wait
    of its next poll, set after every message and every empty poll), never
    below ``OSLO_RPC_IDLE_POLL_MIN_S``."""

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get("_nfvha_poll_s", OSLO_RPC_IDLE_POLL_MIN_S)

    def __set__(self, obj: Any, value: float) -> None:
        obj.__dict__["_nfvha_poll_s"] = max(value, OSLO_RPC_IDLE_POLL_MIN_S)


def _rpc_servers_poll_in_longer_steps() -> None:
    listener = getattr(amqpdriver, "RpcAMQPListener", None)
    if isinstance(listener, type) and not isinstance(
            listener.__dict__.get("_current_timeout"), _AtLeast):
        listener._current_timeout = _AtLeast()


PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")


class _EndpointBridge:
    """What oslo's dispatcher sees: every public method of `endpoint`, taking
    oslo's extra context argument and running the real method on `loop`."""

    def __init__(self, endpoint: object, loop: asyncio.AbstractEventLoop) -> None:
        self._endpoint = endpoint
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        func = bus_method(self._endpoint, name)
        if func is None:
            raise AttributeError(name)  # oslo: no such method
        loop = self._loop

        def bridged(_ctxt: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                result = func(**kwargs)
                if inspect.isawaitable(result):
                    result = await result
                return result

            return asyncio.run_coroutine_threadsafe(run(), loop).result()

        return bridged


class _NotificationBridge:
    """Notification endpoint: one method per priority, each hands the
    notification to `callback` on the event loop."""

    def __init__(self, callback: Callable[[dict[str, Any]], Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._callback = callback
        self._loop = loop
        for priority in PRIORITIES:
            setattr(self, priority, self._make(priority))

    def _make(self, priority: str) -> Callable[..., None]:
        def handle(_ctxt: Any, publisher_id: str, event_type: str, payload: Any,
                   metadata: dict[str, Any]) -> None:
            note = {"priority": priority, "publisher_id": publisher_id,
                    "event_type": event_type, "payload": payload,
                    "timestamp": metadata.get("timestamp"),
                    "message_id": metadata.get("message_id")}

            async def run() -> None:
                result = self._callback(note)
                if inspect.isawaitable(result):
                    await result

            try:
                asyncio.run_coroutine_threadsafe(run(), self._loop).result()
            except Exception:  # a bad notification must not stop the listener
                LOG.exception("notification callback failed for %s", event_type)

        return handle


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, oslo_messaging.MessagingTimeout):
        return BusTimeout(str(exc) or "no answer within the call timeout")
    if isinstance(exc, oslo_messaging.RemoteError):
        return RemoteError(exc.exc_type or "RemoteError", exc.value or str(exc))
    if isinstance(exc, oslo_messaging.MessagingException):
        return NoServer(str(exc))  # broker unreachable, delivery failed, ...
    # oslo re-raises builtin exceptions of the endpoint as themselves, with
    # the remote traceback appended to the text: keep the first line.
    text = str(exc).split("\n", 1)[0]
    return RemoteError(type(exc).__name__, text)


class OsloBus:
    def __init__(self, transport_url: str, *, call_timeout: float = 5.0,
                 prefix: str | None = None, connect_retries: int = 3,
                 workers: int = 16, publishers: int = 4,
                 compute_casts: str = "amqp") -> None:
        if compute_casts not in ("amqp", "oslo"):
            raise ValueError(f"compute_casts must be 'amqp' or 'oslo', not {compute_casts!r}")
        self._url = transport_url
        # Controller -> compute casts: "amqp" = our asyncio consumer
        # (nfvha.bus.amqp_casts, about a third of oslo's CPU per message),
        # "oslo" = oslo.messaging RPC casts like everything else.
        self._casts_mode = compute_casts
        self._casts: Any = None
        self._controller_fanout: Any = None
        # `prefix` names the exchange and the topics (prefix-controller,
        # prefix-compute): tests and side-by-side deployments use their own
        # so they never share a queue on one broker. Not given: oslo's own
        # [DEFAULT] control_exchange if the operator set it, else "nfvha".
        self._prefix = prefix
        self._exchange = self._controller_topic = self._compute_topic = ""
        self._call_timeout = call_timeout
        # Bounded broker reconnects: with RabbitMQ down a call must fail (and
        # be retried by its caller), not hang a thread forever.
        self._retries = connect_retries
        self._workers = workers
        self._transport: Any = None
        self._notify_transport: Any = None
        self._servers: list[Any] = []
        self._pool: ThreadPoolExecutor | None = None
        self._publishers: list[ThreadPoolExecutor] = []
        self._n_publishers = max(1, publishers)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fanouts: dict[str, Future[Any] | None] = {}

    # -- lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        if self._transport is not None:
            return
        self._loop = asyncio.get_running_loop()
        _rpc_servers_poll_in_longer_steps()  # before any RPC server polls
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="nfvha-bus")
        self._publishers = [ThreadPoolExecutor(1, thread_name_prefix=f"nfvha-bus-cast{i}")
                            for i in range(self._n_publishers)]
        self._transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=self._url)
        prefix = self._prefix
        if prefix is None:  # control_exchange is registered by get_rpc_transport
            exchange = cfg.CONF.control_exchange
            prefix = exchange if exchange and exchange != "openstack" else DEFAULT_PREFIX
        self._exchange = prefix
        self._controller_topic = f"{prefix}-controller"
        self._compute_topic = f"{prefix}-compute"
        self._controller_client = self._client(self._controller_topic)
        self._compute_client = self._client(self._compute_topic)
        if self._casts_mode == "amqp":
            from nfvha.bus.amqp_casts import ComputeCasts
            from nfvha.bus.amqp_connect import amqp_urls, ssl_context_from_oslo

            self._casts = ComputeCasts(amqp_urls(self._url), prefix,
                                       ssl_context=ssl_context_from_oslo())
            await self._casts.start()
            # fanouts to every controller (the agents' `alive`) take the same
            # cheap path: each controller hears every host, so its CPU per
            # message is what scales
            self._controller_fanout = ComputeCasts(
                amqp_urls(self._url), prefix, ssl_context=ssl_context_from_oslo(),
                role="controllers")
            await self._controller_fanout.start()

    def _client(self, topic: str) -> Any:
        target = oslo_messaging.Target(exchange=self._exchange, topic=topic)
        return oslo_messaging.get_rpc_client(
            self._transport, target, timeout=self._call_timeout, retry=self._retries
        )

    async def stop(self) -> None:
        if self._transport is None:
            return
        servers, self._servers = self._servers, []
        loop = asyncio.get_running_loop()
        for server in servers:
            # stop() waits for in-flight dispatches, which may wait on this
            # loop: run it in a thread and keep the loop turning.
            await loop.run_in_executor(None, _stop_server, server)
        for casts in (self._casts, self._controller_fanout):
            if casts is not None:
                await casts.stop()
        self._casts = self._controller_fanout = None
        assert self._pool is not None
        for publisher in self._publishers:
            await loop.run_in_executor(None, publisher.shutdown, True)
        self._publishers = []
        self._pool.shutdown(wait=False, cancel_futures=True)
        for transport in (self._transport, self._notify_transport):
            if transport is not None:
                await loop.run_in_executor(None, transport.cleanup)
        self._transport = None
        self._notify_transport = None

    # -- calls and casts ----------------------------------------------------
    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._transport is None:
            raise NoServer("bus not started")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except Exception as exc:
            raise _translate(exc) from exc

    def _publish(self, dest: str, fn: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> Future[Any] | None:
        if self._transport is None or not self._publishers:
            LOG.warning("cast dropped: bus not started")
            return None
        # Same destination, same thread: per-destination order is kept.
        publisher = self._publishers[zlib.crc32(dest.encode()) % len(self._publishers)]
        future: Future[Any] = publisher.submit(fn, *args, **kwargs)
        future.add_done_callback(_log_cast_failure)
        return future

    async def call_controller(self, method: str, **kwargs: Any) -> Any:
        return await self._run(self._controller_client.call, {}, method, **kwargs)

    async def cast_controller(self, method: str, **kwargs: Any) -> None:
        self._publish("controller", self._controller_client.cast, {}, method, **kwargs)

    # fanouts made while the previous one of their key was on its way
    _fanouts_held: dict[str, dict[str, Any]] | None = None

    async def fanout_controller(self, method: str, **kwargs: Any) -> None:
        if self._controller_fanout is not None:
            # older than this in a queue (a controller away from the broker)
            # it would tell of a host that may have died since
            self._controller_fanout.cast(None, method, kwargs, ttl_s=CONTROLLER_FANOUT_TTL_S)
            return
        self._fanout_oslo(method, kwargs)

    def _fanout_oslo(self, method: str, kwargs: dict[str, Any]) -> None:
        # With the broker away a cast blocks its publisher thread for the
        # reconnect retries; stale ones must not pile up in front of the
        # state casts, so one at a time per method, host and instance. One
        # made meanwhile is held (merged into any held before it: later
        # fields win) and goes when the one on its way is out, so the
        # controllers get the newest snapshot (alive, sg_instances, sg_links)
        # and every field of a change (sg_member_changed), never a stale one.
        key = f"{method}:{kwargs.get('host')}:{kwargs.get('uuid')}"
        if self._fanouts_held is None:
            self._fanouts_held = {}
        held = self._fanouts_held
        pending = self._fanouts.get(key)
        if pending is not None and not pending.done():
            if key not in held:
                loop = asyncio.get_running_loop()

                def release(_f: Future[Any]) -> None:  # in the publisher thread
                    with contextlib.suppress(RuntimeError):  # the loop closed: stopping
                        loop.call_soon_threadsafe(self._release_fanout, key, method)

                pending.add_done_callback(release)
            held[key] = {**held.get(key, {}), **kwargs}
            return
        self._fanouts[key] = self._publish(
            "controller-fanout", self._controller_client.prepare(fanout=True).cast, {},
            method, **kwargs)

    def _release_fanout(self, key: str, method: str) -> None:
        kwargs = (self._fanouts_held or {}).pop(key, None)
        if kwargs is not None and self._transport is not None:
            self._fanout_oslo(method, kwargs)

    async def reply_controller(self, server: str, method: str, **kwargs: Any) -> None:
        # oslo's RPC server also listens on <topic>.<server>: a cast there
        # reaches the one controller that asked (serve_controller names it).
        self._publish("controller:" + server,
                      self._controller_client.prepare(server=server).cast, {}, method, **kwargs)

    async def cast_compute(self, host: str, method: str, **kwargs: Any) -> None:
        if self._casts is not None:
            self._casts.cast(host, method, kwargs)
            return
        self._publish("compute:" + host, self._compute_client.prepare(server=host).cast, {},
                      method, **kwargs)

    async def fanout_compute(self, method: str, **kwargs: Any) -> None:
        if self._casts is not None:
            self._casts.cast(None, method, kwargs)
            return
        self._publish("fanout", self._compute_client.prepare(fanout=True).cast, {}, method,
                      **kwargs)

    # -- serving --------------------------------------------------------------
    async def serve_controller(self, endpoint: object) -> None:
        # server= names this controller (its controller_id: replies meant for
        # it use it); several controllers share the topic queue, so RabbitMQ
        # spreads calls over them (no single point of failure).
        name = getattr(endpoint, "controller_id", None) or socket.gethostname()
        await self._serve(self._controller_topic, name, endpoint)
        if self._controller_fanout is not None:  # its own queue of the fanout
            await self._controller_fanout.serve(name, endpoint)

    async def serve_compute(self, host: str, endpoint: object) -> None:
        if self._transport is None:
            await self.start()
        if self._casts is not None:
            await self._casts.serve(host, endpoint)
            return
        await self._serve(self._compute_topic, host, endpoint)

    async def _serve(self, topic: str, server_name: str, endpoint: object) -> None:
        if self._transport is None:
            await self.start()
        assert self._loop is not None
        target = oslo_messaging.Target(exchange=self._exchange, topic=topic, server=server_name)
        server = oslo_messaging.get_rpc_server(
            self._transport, target, [_EndpointBridge(endpoint, self._loop)],
        )  # no executor argument: deprecated, and "threading" is what it picks unpatched
        await asyncio.get_running_loop().run_in_executor(None, server.start)
        self._servers.append(server)

    # -- notifications (Nova's, for server-group state) ------------------------
    async def listen_notifications(self, exchange: str, topics: list[str],
                                   callback: Callable[[dict[str, Any]], Any],
                                   pool: str = "nfvha") -> None:
        """Consume notifications published on `exchange` (Nova: ``nova``) under
        `topics` (``notifications``, ``versioned_notifications``).

        `callback(note)` (sync or async) runs on the event loop with
        ``{"priority", "publisher_id", "event_type", "payload", "timestamp",
        "message_id"}``. `pool` gives us our own queue, so we never take
        notifications away from other consumers (Ceilometer, Searchlight).
        """
        if self._transport is None:
            await self.start()
        assert self._loop is not None
        if self._notify_transport is None:
            self._notify_transport = oslo_messaging.get_notification_transport(
                cfg.CONF, url=self._url
            )
        targets = [oslo_messaging.Target(exchange=exchange, topic=t) for t in topics]
        listener = oslo_messaging.get_notification_listener(
            self._notify_transport, targets, [_NotificationBridge(callback, self._loop)],
            pool=pool,
        )
        await asyncio.get_running_loop().run_in_executor(None, listener.start)
        self._servers.append(listener)


def _stop_server(server: Any) -> None:
    server.stop()
    server.wait()


def _log_cast_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        LOG.warning("cast failed: %s", exc)
