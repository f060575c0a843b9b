"""Masakari sink: a type "VM" notification (``POST /v1/notifications``) through
openstacksdk's ``instance_ha.create_notification``.

Masakari's engine acts on a VM notification only for the libvirt events in
masakari/engine/instance_events.py: ``LIFECYCLE``/``STOPPED_FAILED`` (or
``IO_ERROR``).  A dead or unhealthy guest is reported as LIFECYCLE /
STOPPED_FAILED, so Masakari's instance-failure flow (stop, start, confirm
active) recovers it.  ``hostname`` is the compute host: Masakari takes
the notification only from a host registered in a failover segment under
that name.

What the real Masakari answers (checked by tests/test_real_masakari_*.py)
and what the delivery becomes:

- 202: delivered; the note keeps Masakari's ``notification_uuid``.
- 409 "... is duplicate": Masakari already holds a notification with the
  same payload from that host within its
  ``duplicate_notification_detection_interval`` (an earlier attempt of ours
  whose answer was lost, or an earlier fault of the same VM, whose recovery
  covers this one): delivered, with a note saying so.  Masakari has no
  field for our event id; this check is the idempotence.
- 409 "... the host is already under maintenance": the operator (or
  Masakari's own host recovery) took the host out of service; Masakari
  ignores its notifications: rejected, final.
- 400 "Host with name ... could not be found": the host is not registered
  in any failover segment: rejected, final, the note says what to register
  (a recovery hours later, once someone registers it, would surprise more
  than it helps).
- other 400/409: rejected; anything else (5xx, Keystone or Masakari
  unreachable, 401/403): retried.

Masakari checks nothing about the instance when it accepts the
notification: an instance in a planned operation (a task in progress in
Nova) is accepted, and the engine's flow then fails on Nova's 409 (status
``error``); a paused one is ``ignored``.
Events whose corrective action is none/log are skipped, not sent; so is
``stop``: Masakari's instance-failure flow would restart the VM, the
opposite of what the guest asked for.
"""
from __future__ import annotations

from typing import Any, Optional

from nfvha.controller.reporters import Reject, recovery_skip_note
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
        try:
            created = await self._call(
                lambda c: c.instance_ha.create_notification(**attrs))
        except Reject as exc:
            return self._refused(event["host"], exc)
        uuid = getattr(created, "notification_uuid", None)
        return f"notification_uuid {uuid}" if uuid else None

    @staticmethod
    def _refused(host: str, exc: Reject) -> str:
        """The note of a duplicate (Masakari has it); Reject otherwise, with
        what the operator can do about it."""
        text = exc.reason
        low = text.lower()
        if text.startswith("HTTP 409") and "duplicate" in low:
            return f"duplicate: Masakari already has this notification ({text})"
        if text.startswith("HTTP 409") and "maintenance" in low:
            raise Reject(f"host {host} is on maintenance in Masakari, which ignores "
                         f"its notifications ({text})") from exc
        if text.startswith("HTTP 400") and "could not be found" in low:
            raise Reject(f"host {host} is in no Masakari failover segment: register it "
                         f"under this name ({text})") from exc
        raise exc
