"""Stand-in for an operator's webhook receiver: accepts a JSON POST on any
path and records it (the "API" is nfvha's own: the event as JSON, the event
id also in the ``Idempotency-Key`` header)."""
from __future__ import annotations

from fastapi import Request, Response

from nfvha.standins._http import Standin


class WebhookStandin(Standin):
    title = "webhook receiver stand-in"

    def _routes(self) -> None:
        @self.app.post("/{path:path}")
        async def hook(path: str, request: Request) -> Response:
            rec, failed = await self._record(request)
            if failed is not None:
                return failed
            self._accept(rec)
            return Response(status_code=204)
