"""Stand-in for the OPNFV Doctor sample inspector's southbound API.

Follows its published API (opnfv/doctor, doctor_tests/inspector/sample.py and
the Doctor "Inspector southbound API": ``PUT /events`` with a JSON list of
``{"id"?, "time", "type", "details": {"hostname", "status", "monitor",
"monitor_event_id", ...}}``, answered 200 "OK").
"""
from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from nfvha.standins._http import Standin


class DoctorInspectorStandin(Standin):
    title = "Doctor inspector stand-in"

    def _routes(self) -> None:
        @self.app.put("/events")
        async def events(request: Request) -> Response:
            rec, failed = await self._record(request)
            if failed is not None:
                return failed
            body = rec.body
            if not isinstance(body, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("details"), dict)
                    and "hostname" in e["details"] and "type" in e for e in body):
                return JSONResponse({"error": "expected a list of events"}, 400)
            self._accept(rec)
            return PlainTextResponse("OK")
