"""Aodh sink, OPNFV Doctor's "shortcut": a legacy
``compute.instance.update`` notification with ``state: "error"`` published on
the notifications topic, so Ceilometer turns it into an event and Aodh's
event alarms fire at once, without waiting for a Nova reset-state and the
notification Nova would then send.

Payload: ``tenant_id`` (the instance's project, looked up in Nova once per
instance; Aodh matches event alarms by project), ``instance_id``, ``state``,
``old_state`` (null: unknown here), ``host``, ``state_description``, and
``nfvha_event_id`` / ``nfvha_cause``. The publisher id is
``nfvha.<compute host>``, so Ceilometer's ``host`` trait (publisher_id split
at the first dot) is the compute host. The nfvha event id is the message
id: a redelivery is the same notification again.
"""
from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable, Optional

from nfvha.controller.reporters import Reject, Retry

ProjectOf = Callable[[str], Awaitable[str]]


class AodhShortcutReporter:
    def __init__(self, publisher: Any, *, name: str = "aodh", exchange: str = "nova",
                 topic: str = "notifications", project_of: Optional[ProjectOf] = None) -> None:
        self.name = name
        self.publisher = publisher  # nfvha.bus.notify.NotificationPublisher
        self.exchange = exchange
        self.topic = topic
        self.project_of = project_of

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        note = None
        tenant: Optional[str] = None
        if self.project_of is not None:
            try:
                tenant = await self.project_of(event["instance_uuid"])
            except Reject as exc:  # Nova does not know the instance: alarm anyway
                note = f"tenant_id unknown ({exc.reason})"
            # Retry (Nova unreachable) propagates: the alarm without its project
            # would not reach a project-scoped Aodh alarm
        else:
            note = "tenant_id not looked up ([aodh] cloud unset)"
        payload = {
            "tenant_id": tenant, "instance_id": event["instance_uuid"], "state": "error",
            "old_state": None, "host": event["host"],
            "state_description": f"nfvha: {event['kind']}",
            "nfvha_event_id": event["id"], "nfvha_cause": event["kind"],
        }
        try:
            await self.publisher.publish(
                self.exchange, self.topic, "compute.instance.update", payload,
                publisher_id=f"nfvha.{event['host']}", message_id=event["id"])
        except Exception as exc:
            raise Retry(f"notification not published: {type(exc).__name__}: {exc}"[:300]) \
                from exc
        return note

    async def aclose(self) -> None:
        await self.publisher.close()
        close_lookup = getattr(self.project_of, "aclose", None)
        if close_lookup is not None:
            await close_lookup()
