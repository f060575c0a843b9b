"""Stand-in for Masakari (OpenStack instance HA service).

Follows its published API (Masakari API reference, "Notifications":
https://docs.openstack.org/api-ref/instance-ha/#notifications-notifications):
``POST /v1/notifications`` with ``{"notification": {"type", "hostname",
"generated_time", "payload"}}`` answers 202 with the created notification;
a malformed body answers 400; the same notification (type, hostname,
payload) again answers 409 when an earlier one's ``generated_time`` is at
most ``duplicate_interval_s`` (Masakari's
``duplicate_notification_detection_interval``, 180 s) before the new one's,
whatever the earlier one's status: Masakari 22's duplicate check reads only
type, source host, generated_time and payload (checked against the real
service by tests/test_real_masakari_notifications.py).  ``GET /`` and ``GET /v1``
serve the version documents openstacksdk's discovery reads.
"""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from nfvha.standins._http import Standin

NOTIFICATION_TYPES = ("COMPUTE_HOST", "VM", "PROCESS")


def _version_doc(base: str) -> dict[str, Any]:
    return {"id": "v1.0", "status": "CURRENT", "version": "1.2", "min_version": "1.0",
            "updated": "2016-07-01T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base}/v1/"}]}


class MasakariStandin(Standin):
    title = "Masakari stand-in"

    def __init__(self, duplicate_interval_s: float = 180.0) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.duplicate_interval_s = duplicate_interval_s
        # (wall time, request) of each notification answered 409 "is duplicate"
        self.duplicates: list[tuple[float, Any]] = []
        super().__init__()

    def _routes(self) -> None:
        app = self.app

        @app.get("/")
        async def versions(request: Request) -> dict[str, Any]:
            base = str(request.base_url).rstrip("/")
            return {"versions": [_version_doc(base)]}

        @app.get("/v1")
        @app.get("/v1/")
        async def version(request: Request) -> dict[str, Any]:
            base = str(request.base_url).rstrip("/")
            return {"version": _version_doc(base)}

        @app.post("/v1/notifications")
        async def create(request: Request) -> Response:
            rec, failed = await self._record(request)
            if failed is not None:
                return failed
            error = _validate(rec.body)
            if error:
                return JSONResponse({"badRequest": {"code": 400, "message": error}}, 400)
            n = rec.body["notification"]
            since = _when(n["generated_time"]) - timedelta(seconds=self.duplicate_interval_s)
            for prior in self.notifications:
                if (prior["type"], prior["hostname"], prior["payload"]) == (
                        n["type"], n["hostname"], n["payload"]) \
                        and _when(prior["generated_time"]) >= since:
                    # the real Masakari's words (its duplicate check), which
                    # the sink reads to tell a duplicate from a refusal
                    self.duplicates.append((time.time(), rec))
                    return JSONResponse({"conflictingRequest": {
                        "code": 409, "message": "Notification received from host "
                        f"{n['hostname']} of type {n['type']} is duplicate."}}, 409)
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
            created = {"id": len(self.notifications) + 1,
                       "notification_uuid": str(uuid.uuid4()), "type": n["type"],
                       "hostname": n["hostname"], "generated_time": n["generated_time"],
                       "payload": n["payload"], "status": "new", "source_host_uuid":
                       str(uuid.uuid5(uuid.NAMESPACE_DNS, n["hostname"])),
                       "created_at": now, "updated_at": None, "deleted": False}
            self.notifications.append(created)
            self._accept(rec)
            return JSONResponse({"notification": created}, 202)

    def finish_all(self) -> None:
        """Mark every notification processed (the duplicate check still sees
        them: it goes by generated_time, not status)."""
        for n in self.notifications:
            n["status"] = "finished"


def _when(value: Any) -> datetime:
    # Masakari keeps generated_time as a naive UTC datetime
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _validate(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("notification"), dict):
        return "Invalid input for field/attribute notification."
    n = body["notification"]
    for key in ("type", "hostname", "generated_time", "payload"):
        if key not in n:
            return f"'{key}' is a required property"
    if n["type"] not in NOTIFICATION_TYPES:
        return f"Invalid input for field/attribute type. Value: {n['type']}."
    if not isinstance(n["hostname"], str) or not 1 <= len(n["hostname"]) <= 255:
        return "Invalid input for field/attribute hostname."
    if not isinstance(n["payload"], dict):
        return "Invalid input for field/attribute payload."
    try:
        _when(n["generated_time"])
    except ValueError:
        return f"Invalid input for field/attribute generated_time. Value: {n['generated_time']}."
    return ""
