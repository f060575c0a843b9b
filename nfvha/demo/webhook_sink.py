"""A webhook receiver for the demo: the "sink" a fault report must reach.

It records the monotonic time each report arrives, so the demo can show
detection → sink latency measured on one clock.
"""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request


@dataclass
class Received:
    body: dict[str, Any]
    mono: float


@dataclass
class WebhookSink:
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _changed: asyncio.Condition | None = None
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self._changed = asyncio.Condition()
        app = FastAPI(title="nfvha demo webhook sink")

        @app.post("/faults")
        async def faults(request: Request) -> dict[str, bool]:
            body = await request.json()
            self.received.append(Received(body, time.monotonic()))
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()
            return {"ok": True}

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}/faults"
        return self.url

    async def wait_for(self, instance_uuid: str, kind: str, after: float,
                       timeout: float) -> Received | None:
        """The first report of `kind` for the instance that arrived at or after `after`."""
        assert self._changed is not None

        def find() -> Received | None:
            for r in self.received:
                if (r.body.get("instance_uuid") == instance_uuid and r.body.get("kind") == kind
                        and r.mono >= after):
                    return r
            return None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(find), timeout)
            except asyncio.TimeoutError:
                return None
        return find()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
