"""Probes survive whatever the service does (refuse, hang, garbage) and say so
as failed samples; process presence treats a zombie as dead."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from nfvha.verify.engine import free_port
from nfvha.verify.probes import AmqpProbe, HttpProbe, ProcessProbe, TcpProbe, pid_alive
from nfvha.verify.timeline import Record
from tests.conftest import require_rabbitmq


async def _server(mode: dict):
    """A hostile HTTP server whose behaviour the test switches at run time."""
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                await r.readuntil(b"\r\n\r\n")
                m = mode["m"]
                if m == "close":
                    break
                if m == "garbage":
                    w.write(b"\x00\xffNOTHTTP\r\n\r\n")
                elif m == "huge":
                    w.write(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200000 + b"\r\n\r\n")
                elif m == "hang":
                    await asyncio.sleep(5)
                elif m == "500":
                    w.write(b"HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: t\r\n\r\nok")
                await w.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()
    port = free_port()
    return await asyncio.start_server(handle, "127.0.0.1", port), port


async def test_http_probe_records_every_kind_of_failure_and_recovers():
    mode = {"m": "ok"}
    server, port = await _server(mode)
    rec = Record("t", 0.0)
    stop = asyncio.Event()
    flips = []
    probe = HttpProbe("127.0.0.1", port, interval=0.005, timeout=0.2)
    task = asyncio.create_task(probe.run(rec, stop, lambda ok, t, d: flips.append((ok, d))))
    for m in ("ok", "close", "ok", "garbage", "ok", "huge", "ok", "500", "ok", "hang", "ok"):
        mode["m"] = m
        await asyncio.sleep(0.3 if m == "hang" else 0.08)
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.1)                      # refused from here on
    stop.set()
    await asyncio.wait_for(task, 2)              # the probe never raised
    details = {s.detail.split(":")[0] for s in rec.samples if not s.ok}
    assert "IncompleteReadError" in details      # closed mid-request
    assert "ValueError" in details               # garbage status line
    assert "LimitOverrunError" in details        # a 200 kB header
    assert any(d.startswith("HTTP 500") for d in details)
    assert "TimeoutError" in details             # hang: 0.2 s timeout
    assert "ConnectionRefusedError" in details
    assert [ok for ok, _ in flips][:2] == [True, False]
    assert sum(1 for s in rec.samples if s.ok) > 20


async def test_tcp_probe_sees_a_listener_come_and_go():
    port = free_port()
    probe = TcpProbe("127.0.0.1", port)
    assert not (await probe.once()).ok
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    assert (await probe.once()).ok
    server.close()
    await server.wait_closed()
    assert not (await probe.once()).ok


async def test_process_probe_counts_a_zombie_as_dead():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        probe = ProcessProbe(lambda: p.pid)
        assert (await probe.once()).ok
        os.kill(p.pid, signal.SIGKILL)
        for _ in range(100):                       # not reaped: a zombie now
            if not pid_alive(p.pid):
                break
            await asyncio.sleep(0.01)
        assert os.path.exists(f"/proc/{p.pid}")    # still in the process table
        assert not (await probe.once()).ok
    finally:
        p.kill()
        p.wait()
    assert not (await ProcessProbe(lambda: None).once()).ok


async def test_amqp_probe_round_trips_through_the_real_broker():
    url = require_rabbitmq().replace("rabbit://", "amqp://")
    probe = AmqpProbe(url, interval=0.01)
    try:
        samples = [await probe.once() for _ in range(5)]
    finally:
        await probe.close()
    assert all(s.ok for s in samples), samples
    assert max(s.latency_ms for s in samples) < 1000
    bad = AmqpProbe("amqp://guest:guest@127.0.0.1:1//", timeout=0.3)
    s = await bad.once()
    assert not s.ok and s.detail
