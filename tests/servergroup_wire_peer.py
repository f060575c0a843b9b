"""Test helper: a guest that speaks only StarlingX's server-group wire format.

Plays QEMU's side of a ``cgcs.messaging.<name>.sock`` chardev socket (it
listens; the compute agent connects) and the guest at once: it writes base
layer v2 envelopes addressed to ``cgcs.server_grp`` by hand and records every
message it receives — no nfvha guest code involved.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"version": 2, "source_addr": "cgcs.server_grp", "dest_addr": "cgcs.server_grp",
            "data": data}


class WirePeer:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.received: list[tuple[float, dict[str, Any]]] = []  # (monotonic, message)
        self.changed = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.connected.set()
        buf = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.received.append((time.monotonic(), json.loads(line)))
                        self.changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
                self.connected.clear()

    def write_raw(self, data: bytes) -> None:
        assert self._writer is not None, "compute agent not connected"
        self._writer.write(data)

    def send(self, msg: dict[str, Any]) -> None:
        self.write_raw(b"\n" + json.dumps(msg).encode() + b"\n")

    def broadcast(self, data: str) -> None:
        self.send(envelope({"version": 2, "msg_type": "broadcast", "data": data}))

    def status_query(self, seq: int) -> None:
        self.send(envelope({"version": 2, "msg_type": "status_query", "seq": seq}))

    def app(self, msg_type: str | None = None) -> list[dict[str, Any]]:
        """App-layer messages received (of one type)."""
        out = []
        for _, m in self.received:
            d = m.get("data") if isinstance(m, dict) else None
            if isinstance(d, dict) and (msg_type is None or d.get("msg_type") == msg_type):
                out.append(d)
        return out

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = pred(self)
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.path.name}: timed out; received {self.app()}")
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.2))
