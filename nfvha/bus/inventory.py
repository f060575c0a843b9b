"""The digest a compute agent and the controller compare to find out, cheaply,
whether the controller's view of the agent's instances has drifted.

Casts are fire and forget: a state change cast while RabbitMQ restarts, or
an instance whose channel disappeared (nothing is cast for that), leaves
the controller with a stale record. Every ``[heartbeat] sync_interval_s``
the agent casts ``sync(host, count, digest)``; the controller computes the
same digest from its store and, when they differ, casts ``resync`` back,
and the agent answers with a full ``hello``. One small message per agent
per interval; a full list only after a drift.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Optional


def inventory_digest(items: Iterable[tuple[str, str, Optional[str]]]) -> str:
    """sha1 over the sorted ``(uuid, heartbeat state, health)`` triples."""
    lines = sorted(f"{uuid}\t{state}\t{health or '-'}" for uuid, state, health in items)
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()
