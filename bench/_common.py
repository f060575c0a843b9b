"""Helpers shared by the bench scripts (run as ``python bench/<script>.py``,
so this directory is on sys.path)."""
from __future__ import annotations

import socket


def pct(xs: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, rounding up; None for no samples."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rabbitmq_unreachable(host: str = "127.0.0.1", port: int = 5672) -> str | None:
    """Why the local RabbitMQ cannot be reached, or None when it can."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return None
    except OSError as exc:
        return f"RabbitMQ not reachable at {host}:{port} ({exc}); skipped"


class StubController:
    """The controller's bus endpoint as a bench needs it: keeps what the
    compute agent reports (state changes, faults), acks every fault, takes
    the rest (hello, alive, sync) and does nothing with it."""

    def __init__(self) -> None:
        self.states: list[dict] = []
        self.faults: list[dict] = []

    async def hello(self, host: str, instances: list, agent_started_at=None) -> None:
        pass

    async def alive(self, **kwargs) -> None:
        pass

    async def sync(self, **kwargs) -> None:
        pass

    async def instance_state(self, **kwargs) -> None:
        self.states.append(kwargs)

    async def fault(self, event: dict) -> dict:
        self.faults.append(event)
        return {"ok": True, "id": event["id"]}
