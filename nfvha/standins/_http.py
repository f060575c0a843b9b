"""Shared machinery of the HTTP stand-ins: recording, failure injection, a
real uvicorn server on 127.0.0.1 (port chosen by the kernel)."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import uvicorn
from fastapi import FastAPI, Request, Response


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # decoded JSON, or the raw text if it was not JSON


@dataclass
class _Failures:
    remaining: int = 0
    status: int = 503
    body: dict = field(default_factory=lambda: {"error": "stand-in told to fail"})


class Standin:
    """Base: subclasses add routes to ``self.app`` in ``_routes``."""

    title = "stand-in"

    def __init__(self) -> None:
        self.app = FastAPI(title=self.title)
        self.received: list[Received] = []   # requests that were answered 2xx
        self.attempts: list[Received] = []   # every request, failed ones included
        self._fail = _Failures()
        self._server: Optional[uvicorn.Server] = None
        self._task: Optional[asyncio.Task[None]] = None
        self.url = ""
        self._routes()
        self._arrived = asyncio.Event()  # 3.10+: not bound to a loop until awaited

    # --- failure injection -------------------------------------------------
    def fail_next(self, n: int, status: int = 503, body: Optional[dict] = None) -> None:
        """Answer the next ``n`` requests with ``status`` (default 503)."""
        self._fail = _Failures(n, status, body or {"error": "stand-in told to fail"})

    def recover(self) -> None:
        self._fail = _Failures()

    # --- used by subclasses' handlers --------------------------------------
    async def _record(self, request: Request) -> tuple[Received, Optional[Response]]:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Received(request.method, request.url.path,
                       {k.lower(): v for k, v in request.headers.items()}, body)
        self.attempts.append(rec)
        if self._fail.remaining > 0:
            self._fail.remaining -= 1
            return rec, Response(json.dumps(self._fail.body), status_code=self._fail.status,
                                 media_type="application/json")
        return rec, None

    def _accept(self, rec: Received) -> None:
        self.received.append(rec)
        self._arrived.set()

    async def wait_received(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests were accepted."""
        async def _wait() -> None:
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(_wait(), timeout)
        return self.received

    def _routes(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # --- server ------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
            await asyncio.sleep(0.01)
        sock = self._server.servers[0].sockets[0]
        bound_host, bound_port = sock.getsockname()[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = None
            self._task = None

    async def __aenter__(self) -> Standin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

