"""Masakari sink: a type "VM" notification (``POST /v1/notifications``) through
openstacksdk's ``instance_ha.create_notification``.

Masakari's engine acts on a VM notification only for the libvirt events in
masakari/engine/instance_events.py: ``LIFECYCLE``/``STOPPED_FAILED`` (or
``IO_ERROR``).  A dead or unhealthy guest is reported as LIFECYCLE /
STOPPED_FAILED, so Masakari's instance-failure flow (stop, start, confirm
active) recovers it.  ``hostname`` is the compute host.  400 (bad) and 409
(Masakari already processes the same notification) are final.  Masakari
has no field for our event id; its 409 duplicate check is the idempotence.
Events whose corrective action is none/log are skipped, not sent; so is
``stop``: Masakari's instance-failure flow would restart the VM, the
opposite of what the guest asked for.
"""
from __future__ import annotations

from typing import Any, Optional

from nfvha.controller.reporters import recovery_skip_note
from nfvha.controller.reporters._openstack import ConnectionSource, SdkSink


class MasakariReporter(SdkSink):
    def __init__(self, conn: ConnectionSource, name: str = "masakari") -> None:
        super().__init__(conn, frozenset({400, 409}))
        self.name = name

    @staticmethod
    def notification(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "VM",
            "hostname": event["host"],
            "generated_time": event["detected_at"],
            "payload": {
                "event": "LIFECYCLE",
                "instance_uuid": event["instance_uuid"],
                "vir_domain_event": "STOPPED_FAILED",
            },
        }

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        skip = recovery_skip_note(event)
        if skip:
            return skip
        if event.get("corrective_action") == "stop":
            return "skipped: corrective_action stop (Masakari would restart the VM)"
        attrs = self.notification(event)
        created = await self._call(lambda c: c.instance_ha.create_notification(**attrs))
        uuid = getattr(created, "notification_uuid", None)
        return f"notification_uuid {uuid}" if uuid else None
