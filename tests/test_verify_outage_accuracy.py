"""Measurement accuracy: a synthetic outage of known length is measured within ±20 ms.

The backend (a real process, `python -m nfvha.verify.backend`) answers 503 for
exactly M ms of its monotonic clock (the same CLOCK_MONOTONIC as ours) and
tells us the window; the engine's HTTP probe (5 ms, keep-alive) must find it.
"""
from __future__ import annotations

import asyncio
import json
import sys

import pytest

from nfvha.verify import metrics
from nfvha.verify.engine import free_port
from nfvha.verify.probes import HttpProbe
from nfvha.verify.timeline import Record


async def _post(port: int, path: str) -> dict:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    n = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0]
            .split(b":")[1])
    body = await r.readexactly(n)
    w.close()
    return json.loads(body)


@pytest.fixture
async def backend():
    port = free_port()
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "nfvha.verify.backend",
                                             "--port", str(port), "--name", "b1")
    for _ in range(500):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.01)
    yield port
    p.terminate()
    await p.wait()


@pytest.mark.parametrize("length_ms", [300, 120])
async def test_synthetic_outage_is_measured_within_20ms(backend, length_ms):
    rec = Record("accuracy", 0.0)
    stop = asyncio.Event()
    probe = HttpProbe("127.0.0.1", backend, interval=0.005)
    task = asyncio.create_task(probe.run(rec, stop))
    await asyncio.sleep(0.3)
    window = await _post(backend, f"/fail?ms={length_ms}")
    await asyncio.sleep(length_ms / 1000 + 0.3)
    stop.set()
    await task
    true_ms = 1000 * (window["until"] - window["from"])
    assert true_ms == pytest.approx(length_ms)
    o = metrics.outage(rec.samples, after=window["from"] - 0.05)
    assert o.failed >= length_ms / 10           # the probe really sampled through it
    assert abs(o.ms - true_ms) <= 20, (o, true_ms)
    # The stated bounds hold the truth: [ms, ms + precision], give or take half
    # a request's round trip (a sample's time is its request's middle).
    slack = 1000 * max(s.latency_ms for s in rec.samples) / 2000 + 1
    assert o.ms - slack <= true_ms <= o.ms + o.precision_ms + slack
    assert o.first_fail >= window["from"] - slack / 1000
    assert o.last_fail <= window["until"] + slack / 1000
