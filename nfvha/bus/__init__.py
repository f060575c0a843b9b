"""The message bus between compute agents and controllers.

This package is the one place that knows oslo.messaging and AMQP. Everything else
talks to the `Bus` interface below (docs/dev/contracts.md):

- ``make_bus("inproc://")`` gives `InProcBus`: controller and compute agent
  in one process and one event loop, no broker, no serialisation delay
  (oslo's ``fake://`` driver polls in 50 ms steps: ~50 ms a message).
- ``make_bus("rabbit://user:pass@host:5672/")`` gives `OsloBus`:
  oslo.messaging RPC over RabbitMQ between processes and machines; the
  controller -> compute casts (server-group deliveries) take a plain AMQP
  exchange with an asyncio consumer on the same broker (`amqp_casts`).

Both keep the same semantics: ``call_*`` returns the endpoint's result and
raises a `BusError` when nobody answers or the endpoint failed; ``cast_*``
and ``fanout_*`` return at once (fire and forget) and keep the caller's
order per destination (the controller, one compute host, the fanout).
"""
from __future__ import annotations

from typing import Any, Protocol

from nfvha.bus.errors import BusError, BusTimeout, NoServer, RemoteError

# Names on the wire: the exchange is the prefix, the topics
# <prefix>-controller and <prefix>-compute (server=host).
DEFAULT_PREFIX = "nfvha"

__all__ = [
    "Bus",
    "BusError",
    "BusTimeout",
    "NoServer",
    "RemoteError",
    "make_bus",
    "DEFAULT_PREFIX",
]


class Bus(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    # compute -> controller
    async def call_controller(self, method: str, **kwargs: Any) -> Any: ...
    async def cast_controller(self, method: str, **kwargs: Any) -> None: ...
    # to every controller (each must hear it); best effort: one a controller
    # away from the broker for seconds may expire, and one made while an
    # earlier one with the same method, `host` and `uuid` is still on its
    # way may be merged into the next (later fields win): send snapshots
    # or field changes, never something that must arrive as such
    async def fanout_controller(self, method: str, **kwargs: Any) -> None: ...
    # to the one controller (by its controller_id) that asked for something
    async def reply_controller(self, server: str, method: str, **kwargs: Any) -> None: ...

    # controller -> one compute host / all of them
    async def cast_compute(self, host: str, method: str, **kwargs: Any) -> None: ...
    async def fanout_compute(self, method: str, **kwargs: Any) -> None: ...

    # serving: endpoint objects whose (async) methods are named like the calls
    async def serve_controller(self, endpoint: object) -> None: ...
    async def serve_compute(self, host: str, endpoint: object) -> None: ...


def make_bus(transport_url: str, *, call_timeout: float = 5.0,
             prefix: str | None = None, compute_casts: str = "amqp") -> Bus:
    """``inproc://`` -> InProcBus, ``rabbit://...`` -> OsloBus.

    `call_timeout` (seconds) bounds each ``call_controller`` attempt; callers
    that must not lose a message retry (the compute agent's fault outbox).
    `prefix` names the RabbitMQ exchange and topics (``<prefix>``,
    ``<prefix>-controller``, ``<prefix>-compute``); by default oslo's
    ``[DEFAULT] control_exchange`` if set, else ``nfvha``.
    `compute_casts` (RabbitMQ only): ``amqp`` sends controller -> compute
    casts through nfvha's asyncio AMQP consumer (`nfvha.bus.amqp_casts`),
    ``oslo`` through oslo.messaging like the rest.
    """
    if transport_url.startswith("inproc:"):
        from nfvha.bus.inproc import InProcBus

        return InProcBus()
    if transport_url.startswith(("rabbit:", "kombu:", "amqp:")):
        from nfvha.bus.oslo_rpc import OsloBus

        return OsloBus(transport_url, call_timeout=call_timeout, prefix=prefix,
                       compute_casts=compute_casts)
    raise ValueError(f"unsupported transport URL {transport_url!r} (inproc:// or rabbit://)")
