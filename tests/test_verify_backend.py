"""The scenario backend: keep-alive answers, a timed failure window, and no
crash on hostile requests (oversized head, garbage) — others keep being served."""
from __future__ import annotations

import asyncio
import json

from nfvha.verify.backend import Backend
from nfvha.verify.engine import free_port
from nfvha.verify.probes import HttpProbe


async def _serve():
    b = Backend("b1")
    port = free_port()
    server = await asyncio.start_server(b.serve_conn, "127.0.0.1", port, limit=16384)
    return b, server, port


async def test_keep_alive_and_failure_window():
    b, server, port = await _serve()
    try:
        probe = HttpProbe("127.0.0.1", port)
        s1 = await probe.once()
        s2 = await probe.once()
        assert s1.ok and s2.ok and s1.detail == "b1"
        status, body = b.answer("POST", "/fail?ms=50")
        window = json.loads(body)
        assert status == 200 and abs(window["until"] - window["from"] - 0.05) < 1e-9
        assert not (await probe.once()).ok                 # 503 inside the window
        await asyncio.sleep(0.06)
        assert (await probe.once()).ok
        assert json.loads(b.answer("GET", "/fault-log")[1]) == [window]
        await probe.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_hostile_requests_close_only_their_own_connection():
    b, server, port = await _serve()
    try:
        good = HttpProbe("127.0.0.1", port)
        assert (await good.once()).ok
        for payload in (b"GET / HTTP/1.1\r\nX: " + b"a" * 100000 + b"\r\n\r\n",
                        b"garbage-without-spaces\r\n\r\n",
                        b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
                        b"GET / HTT"):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(payload)
            w.write_eof()
            data = await asyncio.wait_for(r.read(), 2)    # closed, never hangs
            assert b"200" not in data[:12]
            w.close()
            assert (await good.once()).ok                 # the neighbour is unaffected
        await good.close()
    finally:
        server.close()
        await server.wait_closed()
