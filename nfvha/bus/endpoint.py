"""Which methods of an endpoint object the bus may call.

Every bus (in process, oslo.messaging, the AMQP casts) resolves a method
name here: never a private one, and when the endpoint names its
``BUS_METHODS``, only those, so a peer on the bus cannot reach the rest of
a service object (``stop``, the REST queries, ...).
"""
from __future__ import annotations

from typing import Any, Callable, Optional


def bus_method(endpoint: object, name: Any) -> Optional[Callable[..., Any]]:
    if not isinstance(name, str) or not name or name.startswith("_"):
        return None
    allowed = getattr(endpoint, "BUS_METHODS", None)
    if allowed is not None and name not in allowed:
        return None
    func = getattr(endpoint, name, None)
    return func if callable(func) else None
