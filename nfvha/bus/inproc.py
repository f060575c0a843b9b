"""In-process bus: controller and compute agents share one event loop.

Same semantics as OsloBus, without a broker:
- arguments and results go through JSON (as they would on the wire), so
  nothing works embedded that would break over RabbitMQ, and neither side
  can mutate the other's objects;
- ``call_*`` awaits the endpoint and returns its result; no endpoint ->
  NoServer; the endpoint raising -> RemoteError;
- casts return at once: they are queued per server and delivered in order
  by one task, so a slow endpoint never blocks the caster.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
from typing import Any

from nfvha.bus.endpoint import bus_method
from nfvha.bus.errors import NoServer, RemoteError

LOG = logging.getLogger(__name__)

# A cast queue longer than this means the endpoint is stuck; dropping beats
# exhausting memory (casts are best effort by definition).
MAX_QUEUED_CASTS = 100_000


def _wire(value: Any) -> Any:
    return json.loads(json.dumps(value))


async def _invoke(endpoint: object, method: str, kwargs: dict[str, Any]) -> Any:
    func = bus_method(endpoint, method)
    if func is None:
        raise NoServer(f"endpoint {type(endpoint).__name__} has no bus method {method!r}")
    try:
        result = func(**kwargs)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # the endpoint's failure becomes the caller's error
        raise RemoteError(type(exc).__name__, str(exc)) from exc
    return _wire(result)


class _Server:
    """One served endpoint with its ordered cast queue."""

    def __init__(self, name: str, endpoint: object) -> None:
        self.name = name
        self.endpoint = endpoint
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(
            self._deliver(), name=f"inproc-bus-{name}"
        )

    def put(self, method: str, kwargs: dict[str, Any]) -> None:
        if self.queue.qsize() >= MAX_QUEUED_CASTS:
            LOG.error("cast queue of %s is full; dropping %s", self.name, method)
            return
        self.queue.put_nowait((method, kwargs))

    async def _deliver(self) -> None:
        while True:
            method, kwargs = await self.queue.get()
            try:
                await _invoke(self.endpoint, method, kwargs)
            except Exception:
                LOG.exception("cast %s to %s failed", method, self.name)


class InProcBus:
    def __init__(self) -> None:
        self._controllers: list[_Server] = []
        self._next_controller = 0
        self._computes: dict[str, _Server] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        servers = [*self._controllers, *self._computes.values()]
        self._controllers.clear()
        self._computes.clear()
        for server in servers:
            server.task.cancel()
        for server in servers:
            try:
                await server.task
            except asyncio.CancelledError:
                pass

    # -- serving --------------------------------------------------------
    async def serve_controller(self, endpoint: object) -> None:
        self._controllers.append(_Server("controller", endpoint))

    async def serve_compute(self, host: str, endpoint: object) -> None:
        old = self._computes.get(host)
        if old is not None:
            old.task.cancel()
        self._computes[host] = _Server(f"compute:{host}", endpoint)

    # -- compute -> controller -------------------------------------------
    def _controller(self) -> _Server:
        if not self._controllers:
            raise NoServer("no controller is serving")
        # Several controllers share the topic: round robin, like RabbitMQ.
        self._next_controller = (self._next_controller + 1) % len(self._controllers)
        return self._controllers[self._next_controller]

    async def call_controller(self, method: str, **kwargs: Any) -> Any:
        server = self._controller()
        return await _invoke(server.endpoint, method, _wire(kwargs))

    async def cast_controller(self, method: str, **kwargs: Any) -> None:
        if not self._controllers:
            LOG.debug("cast %s dropped: no controller", method)  # as on an unbound topic
            return
        self._controller().put(method, _wire(kwargs))

    async def fanout_controller(self, method: str, **kwargs: Any) -> None:
        for ctl in self._controllers:
            ctl.put(method, _wire(kwargs))

    async def reply_controller(self, server: str, method: str, **kwargs: Any) -> None:
        for ctl in self._controllers:  # the one that asked, by its controller_id
            if getattr(ctl.endpoint, "controller_id", None) == server:
                ctl.put(method, _wire(kwargs))
                return
        await self.cast_controller(method, **kwargs)  # gone: any other may know

    # -- controller -> compute --------------------------------------------
    async def cast_compute(self, host: str, method: str, **kwargs: Any) -> None:
        server = self._computes.get(host)
        if server is None:
            LOG.debug("cast %s to compute %s dropped: not serving", method, host)
            return
        server.put(method, _wire(kwargs))

    async def fanout_compute(self, method: str, **kwargs: Any) -> None:
        payload = _wire(kwargs)
        for server in list(self._computes.values()):
            server.put(method, _wire(payload))
