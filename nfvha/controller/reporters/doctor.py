"""Doctor inspector sink: ``PUT {inspector}/events`` with a one-element list
in the format of Doctor's sample monitor (the inspector's southbound API).

Doctor defines only host-level types (``compute.host.down``, which makes the
sample inspector force the whole host down); a VM fault must not trigger
that, so the type is ``compute.instance.down`` by default and configurable.
The nfvha event id is sent as ``id`` and ``details.monitor_event_id``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from nfvha.controller.reporters._http import HttpSink


class DoctorReporter(HttpSink):
    def __init__(self, url: str, name: str = "doctor",
                 event_type: str = "compute.instance.down", timeout_s: float = 5.0,
                 token_getter: Optional[Callable[[], str]] = None) -> None:
        super().__init__(timeout_s, None, token_getter)
        self.name = name
        self.url = url.rstrip("/") + "/events"
        self.event_type = event_type

    def body(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return [{
            "id": event["id"],
            "time": event["detected_at"],
            "type": self.event_type,
            "details": {
                "hostname": event["host"],
                "status": "down",
                "monitor": "nfvha",
                "monitor_event_id": event["id"],
                "instance_id": event["instance_uuid"],
                "cause": event["kind"],
                "severity": "critical",
                "corrective_action": event["corrective_action"],
            },
        }]

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        await self._send("PUT", self.url, self.body(event))
        return None
