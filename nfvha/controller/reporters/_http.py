"""Shared plumbing of the reporters that speak plain HTTP (webhook, Doctor,
Vitrage): one pooled httpx client per reporter, status → ack/Retry/Reject."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import httpx

from nfvha.controller.reporters import Reject, Retry

# 4xx answers that say "try later" rather than "never"
RETRYABLE_4XX = frozenset({408, 425, 429})


class HttpSink:
    def __init__(self, timeout_s: float = 5.0, headers: Optional[dict[str, str]] = None,
                 token_getter: Optional[Callable[[], str]] = None) -> None:
        self._timeout = timeout_s
        self._headers = dict(headers or {})
        # e.g. a keystoneauth1 Session's get_token (blocking: run in a thread)
        self._token_getter = token_getter
        # Made now, not on the first fault: building a client loads the CA
        # bundle (~50 ms here), which would land on the first report's latency.
        self._client: Optional[httpx.AsyncClient] = httpx.AsyncClient(timeout=timeout_s)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def _send(self, method: str, url: str, body: Any,
                    extra_headers: Optional[dict[str, str]] = None) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   **self._headers, **(extra_headers or {})}
        if self._token_getter is not None:
            headers["X-Auth-Token"] = await asyncio.to_thread(self._token_getter)
        try:
            resp = await self._http().request(method, url, json=body, headers=headers)
        except httpx.HTTPError as exc:  # connect refused, timeout, reset, ...
            raise Retry(f"{type(exc).__name__}: {exc}") from exc
        if 200 <= resp.status_code < 300:
            return resp
        text = f"HTTP {resp.status_code}: {resp.text[:200]}"
        if 400 <= resp.status_code < 500 and resp.status_code not in RETRYABLE_4XX:
            raise Reject(text)
        raise Retry(text)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
