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

import asyncio
from typing import Any, Optional

from nfvha.controller.reporters import Reject, recovery_skip_note
from nfvha.controller.reporters._openstack import ConnectionSource, SdkSink


class MasakariReporter(SdkSink):
    def __init__(self, conn: ConnectionSource, name: str = "masakari",
                 host_status: str = "NORMAL") -> None:
        super().__init__(conn, frozenset({400, 409}))
        self.name = name
        # what a host_down's COMPUTE_HOST notification says of the host:
        # Masakari evacuates only on NORMAL (its hostmonitor's word for a host
        # it found off); UNKNOWN has it record the notification and do nothing
        self.host_status = host_status
        self._host_flights: dict[tuple[str, str], asyncio.Future[str]] = {}

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

    # --- host_down (controller/hostfailure.py): one COMPUTE_HOST notification per
    # host, not one per VM. Masakari's host-failure flow evacuates the whole host;
    # a second notification would start a second flow (its duplicate check is not
    # atomic, so parallel ones can both pass). The first delivery of a host's
    # host_down events sends it, the others wait for that answer and share it;
    # one that comes later (another controller, a retry) gets Masakari's
    # duplicate or maintenance answer: the host is being recovered either way.

    @staticmethod
    def host_notification(event: dict[str, Any], host_status: str = "NORMAL"
                          ) -> dict[str, Any]:
        return {"type": "COMPUTE_HOST", "hostname": event["host"],
                "generated_time": event["detected_at"],
                "payload": {"event": "STOPPED", "host_status": host_status,
                            "cluster_status": "OFFLINE"}}

    async def _host_down(self, event: dict[str, Any]) -> Optional[str]:
        key = (event["host"], event["detected_at"])
        flights = self._host_flights
        fut = flights.get(key)
        if fut is not None and not (fut.done() and fut.exception() is not None):
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        # a failure nobody waited for is not an "exception never retrieved"
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        flights[key] = fut
        while len(flights) > 256:  # old hosts' answers: not needed any more
            flights.pop(next(iter(flights)))
        try:
            created = await self._call(lambda c: c.instance_ha.create_notification(
                **self.host_notification(event, self.host_status)))
            uuid = getattr(created, "notification_uuid", None)
            note = f"COMPUTE_HOST notification_uuid {uuid}"
        except Reject as exc:
            text = exc.reason.lower()
            if exc.reason.startswith("HTTP 409") and ("duplicate" in text
                                                      or "maintenance" in text):
                note = f"COMPUTE_HOST: Masakari already recovers the host ({exc.reason})"
            else:
                try:
                    note = self._refused(event["host"], exc)
                except Exception as final:
                    fut.set_exception(final)
                    raise
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            raise
        fut.set_result(note)
        return note

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        if event.get("kind") == "host_down":
            return await self._host_down(event)
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
