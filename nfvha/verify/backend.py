"""A tiny real HTTP/1.1 service used as the redundant instance in scenarios.

`python -m nfvha.verify.backend --port N --name s1` serves:

- ``GET /`` (any path but the control ones) → ``200 ok <name>``; keep-alive.
- ``POST /fail?ms=M`` → for exactly M ms (this process's monotonic clock)
  every request is answered ``503``; the answer to the POST itself carries the
  window ``{"from": t0, "until": t1}`` so a test knows the true outage.
- ``GET /fault-log`` → JSON list of the windows served so far.

Standard library only, asyncio streams: it must start fast (scenarios
restart it) and must never be the bottleneck of a 5 ms probe.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

MAX_HEADER = 16384


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.windows: List[Tuple[float, float]] = []
        self.fail_until = 0.0
        self.fail_from = 0.0

    def answer(self, method: str, target: str) -> Tuple[int, bytes]:
        url = urlsplit(target)
        now = time.monotonic()
        if method == "POST" and url.path == "/fail":
            ms = float(parse_qs(url.query).get("ms", ["300"])[0])
            # The window starts now; requests already queued behind us see it.
            self.fail_from, self.fail_until = now, now + ms / 1000.0
            self.windows.append((self.fail_from, self.fail_until))
            body = {"from": self.fail_from, "until": self.fail_until}
            return 200, json.dumps(body).encode()
        if url.path == "/fault-log":
            return 200, json.dumps([{"from": a, "until": b} for a, b in self.windows]).encode()
        if self.fail_from <= now < self.fail_until:
            return 503, b"failing " + self.name.encode()
        return 200, b"ok " + self.name.encode()

    async def serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    break
                method, target, headers = head
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(min(length, 1 << 20))
                status, body = self.answer(method, target)
                reason = {200: "OK", 503: "Service Unavailable"}.get(status, "X")
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\nX-Served-By: {self.name}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def read_head(reader: asyncio.StreamReader) -> Optional[Tuple[str, str, dict]]:
    """Reads one request head; None at a clean EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise ValueError("request head too large") from exc
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return parts[0], parts[1], headers


async def serve(host: str, port: int, name: str) -> None:
    backend = Backend(name)
    server = await asyncio.start_server(
        backend.serve_conn, host, port, limit=MAX_HEADER, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description="nfvha verify: tiny HTTP backend instance")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="")
    a = p.parse_args(argv)
    asyncio.run(serve(a.host, a.port, a.name or f"be{a.port}"))


if __name__ == "__main__":
    main()
