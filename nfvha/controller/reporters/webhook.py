"""Webhook sink: the stored event as a JSON POST; any 2xx acknowledges.

The event id travels in the body (``id``) and in the ``Idempotency-Key``
header, so a receiver can drop the duplicates that at-least-once delivery
may produce.  4xx (except 408/425/429) is final; everything else is retried.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from nfvha.controller.reporters._http import HttpSink


class WebhookReporter(HttpSink):
    def __init__(self, url: str, name: str = "webhook", timeout_s: float = 5.0,
                 headers: Optional[dict[str, str]] = None,
                 token_getter: Optional[Callable[[], str]] = None) -> None:
        super().__init__(timeout_s, headers, token_getter)
        self.name = name
        self.url = url

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        await self._send("POST", self.url, event, {"Idempotency-Key": str(event["id"])})
        return None
