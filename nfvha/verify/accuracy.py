"""How exact is the outage measurement? Prints figures.

`python -m nfvha.verify.accuracy [--runs 10] [--length-ms 300] [--interval-ms 5]`
starts the test backend (a real process), makes it answer 503 for exactly
L ms of its monotonic clock, measures the outage with the engine's HTTP
probe, and prints per run: true length, measured length, error, stated
precision, and whether the stated bounds [outage, outage + precision] hold
the truth (± half a round trip).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from typing import List, Optional

from . import metrics
from .engine import free_port
from .probes import HttpProbe
from .timeline import Record


async def _post(port: int, path: str) -> dict:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    body = await r.readexactly(n)
    w.close()
    return json.loads(body)


async def measure_once(port: int, length_ms: float, interval_s: float) -> dict:
    rec = Record("accuracy", 0.0)
    stop = asyncio.Event()
    probe = HttpProbe("127.0.0.1", port, interval=interval_s)
    task = asyncio.create_task(probe.run(rec, stop))
    await asyncio.sleep(0.2)
    window = await _post(port, f"/fail?ms={length_ms}")
    await asyncio.sleep(length_ms / 1000 + 0.2)
    stop.set()
    await task
    true_ms = 1000 * (window["until"] - window["from"])
    o = metrics.outage(rec.samples, after=window["from"] - 0.05)
    half_rtt = max(s.latency_ms for s in rec.samples) / 2
    return {"true_ms": true_ms, "measured_ms": o.ms, "error_ms": o.ms - true_ms,
            "precision_ms": o.precision_ms,
            "bounds_hold": o.ms - half_rtt - 1 <= true_ms <= o.ms + o.precision_ms + half_rtt + 1}


async def main_async(runs: int, length_ms: float, interval_s: float) -> List[dict]:
    port = free_port()
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "nfvha.verify.backend",
                                             "--port", str(port), "--name", "acc")
    try:
        for _ in range(500):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.01)
        return [await measure_once(port, length_ms, interval_s) for _ in range(runs)]
    finally:
        p.terminate()
        await p.wait()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--length-ms", type=float, default=300.0)
    ap.add_argument("--interval-ms", type=float, default=5.0)
    a = ap.parse_args(argv)
    res = asyncio.run(main_async(a.runs, a.length_ms, a.interval_ms / 1000))
    print(f"{'run':>3} {'true ms':>8} {'measured':>9} {'error':>7} {'precision':>9} bounds")
    for i, r in enumerate(res, 1):
        print(f"{i:>3} {r['true_ms']:>8.1f} {r['measured_ms']:>9.1f} {r['error_ms']:>+7.1f} "
              f"{r['precision_ms']:>9.1f} {'ok' if r['bounds_hold'] else 'VIOLATED'}")
    errs = [abs(r["error_ms"]) for r in res]
    print(f"|error| median {statistics.median(errs):.1f} ms, max {max(errs):.1f} ms over "
          f"{len(res)} runs of {a.length_ms:.0f} ms at {a.interval_ms:g} ms sampling; "
          f"bounds held in {sum(r['bounds_hold'] for r in res)}/{len(res)}")
    return 0 if all(r["bounds_hold"] for r in res) else 1


if __name__ == "__main__":
    sys.exit(main())
