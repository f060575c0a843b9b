"""Vitrage sink: ``POST {vitrage}/v1/event`` (Vitrage's event API).

``time`` is UTC in ``%Y-%m-%dT%H:%M:%S.%f`` (Vitrage insists on the
fraction, and wants no offset).  Vitrage's Doctor datasource maps events to
the nova.host vertex only; a VM-level alarm needs a datasource/template
that maps ``details.instance_id`` to nova.instance, hence a distinct,
configurable type instead of ``compute.host.down``.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Optional

from nfvha.controller.reporters._http import HttpSink

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def vitrage_time(iso: str) -> str:
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t.strftime(TIME_FORMAT)


class VitrageReporter(HttpSink):
    def __init__(self, url: str, name: str = "vitrage",
                 event_type: str = "compute.instance.down", timeout_s: float = 5.0,
                 token_getter: Optional[Callable[[], str]] = None) -> None:
        super().__init__(timeout_s, None, token_getter)
        self.name = name
        self.url = url.rstrip("/") + "/v1/event"
        self.event_type = event_type

    def body(self, event: dict[str, Any]) -> dict[str, Any]:
        return {
            "time": vitrage_time(event["detected_at"]),
            "type": self.event_type,
            "details": {
                "hostname": event["host"],
                "source": "nfvha",
                "cause": event["kind"],
                "severity": "critical",
                "status": "down",
                "monitor_id": "nfvha",
                "monitor_event_id": event["id"],
                "instance_id": event["instance_uuid"],
            },
        }

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        await self._send("POST", self.url, self.body(event))
        return None
