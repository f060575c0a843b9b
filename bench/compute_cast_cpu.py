"""CPU a compute agent spends per controller -> compute cast it receives, for
both ways such casts can travel over RabbitMQ (``[bus] compute_casts``):
``oslo`` (oslo.messaging's RPC server: polling thread, worker thread, our
bridge to the event loop) and ``amqp`` (nfvha.bus.amqp_casts: aio-pika on
the event loop).

A receiver process serves one compute host with a trivial endpoint; this
process fans casts out to it, one every GAP seconds (like server-group
broadcasts, not a burst). CPU = the receiver's process CPU time
(``time.process_time()``, all threads) from the first to the last cast,
divided by the casts in between; latency = cast -> endpoint called.

    python bench/compute_cast_cpu.py [--quick] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _common import pct, rabbitmq_unreachable  # noqa: E402

URL = os.environ.get("NFVHA_TEST_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
GAP_S = 0.05

RECEIVER = r"""
import asyncio, json, sys, time
from nfvha.bus import make_bus

async def main(url, prefix, mode, n):
    bus = make_bus(url, prefix=prefix, compute_casts=mode)
    await bus.start()
    got, marks, done = [], {}, asyncio.Event()

    class Endpoint:
        async def note(self, i, t):
            got.append(time.time() - t)
            if len(got) == 1:
                marks["c0"] = time.process_time()
            if len(got) == n:
                marks["c1"] = time.process_time()
                done.set()

    await bus.serve_compute("bench-host", Endpoint())
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.wait_for(done.wait(), 600)
    print(json.dumps({"cpu_ms": (marks["c1"] - marks["c0"]) / (n - 1) * 1000,
                      "latency_ms": [x * 1000 for x in got]}), flush=True)
    await bus.stop()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


async def one(mode: str, n: int) -> dict[str, Any]:
    from nfvha.bus import make_bus

    prefix = f"nfvha-bench-cpu-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, URL, prefix, mode, str(n)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert json.loads(line) == {"ready": True}, line
        bus = make_bus(URL, prefix=prefix, compute_casts=mode)
        await bus.start()
        try:
            await asyncio.sleep(1.0)  # both ends settled
            for i in range(n):
                await bus.fanout_compute("note", i=i, t=time.time())
                await asyncio.sleep(GAP_S)
            result = json.loads(await asyncio.wait_for(
                asyncio.to_thread(proc.stdout.readline), 60))
        finally:
            await bus.stop()
    finally:
        with contextlib.suppress(Exception):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
    lat = result["latency_ms"]
    return {"mode": mode, "casts": n, "cpu_ms_per_cast": result["cpu_ms"],
            "latency_median_ms": statistics.median(lat), "latency_p99_ms": pct(lat, 0.99)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer casts (smoke run)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args()
    why = rabbitmq_unreachable()
    if why:
        print(why)
        return 0
    n = 60 if args.quick else 300
    results = [asyncio.run(one(mode, n)) for mode in ("oslo", "amqp")]
    print(f"compute agent CPU per received controller -> compute cast, {n} casts "
          f"{GAP_S * 1000:.0f} ms apart")
    print(f"{'compute_casts':<14} {'CPU ms/cast':>11} {'latency median ms':>17} "
          f"{'p99 ms':>7}")
    for r in results:
        print(f"{r['mode']:<14} {r['cpu_ms_per_cast']:>11.3f} {r['latency_median_ms']:>17.2f} "
              f"{r['latency_p99_ms']:>7.2f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
