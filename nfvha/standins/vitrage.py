"""Stand-in for Vitrage's event API.

Follows its published API (Vitrage API reference, "Event":
https://docs.openstack.org/vitrage/latest/contributor/vitrage-api.html#event):
``POST /v1/event`` with ``{"time": "%Y-%m-%dT%H:%M:%S.%f", "type": ...,
"details": {...}}``; a ``time`` that does not parse with that format is a
400, as in Vitrage (which requires the fraction).
"""
from __future__ import annotations

from datetime import datetime

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from nfvha.standins._http import Standin

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


class VitrageStandin(Standin):
    title = "Vitrage stand-in"

    def _routes(self) -> None:
        @self.app.post("/v1/event")
        @self.app.post("/v1/event/")
        async def event(request: Request) -> Response:
            rec, failed = await self._record(request)
            if failed is not None:
                return failed
            body = rec.body
            if not isinstance(body, dict) or not {"time", "type", "details"} <= body.keys():
                return JSONResponse({"error": "time, type and details are required"}, 400)
            try:
                datetime.strptime(str(body["time"]), TIME_FORMAT)
            except ValueError:
                return JSONResponse({"error": f"bad time {body['time']!r}"}, 400)
            self._accept(rec)
            return Response(status_code=200)
