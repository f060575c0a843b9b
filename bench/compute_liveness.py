"""What compute-agent liveness costs a controller, and how fast it flags a
silent agent.

A controller process (the real `Controller`, SQLite, oslo.messaging over
the local RabbitMQ) receives `alive` fanouts from H simulated compute
hosts, each every REPORT_S (2 s, the default `[heartbeat]
agent_report_interval_s`), spread evenly, sent by a second process through
the Bus, once per `[bus] compute_casts` path (amqp: aio-pika; oslo). CPU =
the controller's process CPU time (all threads) over a WINDOW, as % of one
core and per `alive`. Then every host stops at once and the controller
reports, per host, the time from its last `alive` to being flagged silent
(`agent_down_after_s` = DOWN_S plus the scan step; the report interval
itself does not count, since the clock starts at the last word).

    python bench/compute_liveness.py [--quick] [--hosts 100,500] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _common import pct, rabbitmq_unreachable  # noqa: E402

URL = os.environ.get("NFVHA_TEST_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
REPORT_S = 2.0
DOWN_S = 3.0

CONTROLLER = r"""
import asyncio, json, sys, time
from nfvha.bus import make_bus
from nfvha.controller.service import Controller

async def main(url, prefix, db, hosts, down_s, mode):
    bus = make_bus(url, prefix=prefix, compute_casts=mode)
    await bus.start()
    c = Controller(db, [], bus=bus, agent_down_after_s=down_s)
    silent = {}
    c.listeners.append(lambda w: silent.__setitem__(w["host"], w["quiet_s"])
                       if w["type"] == "host" and w["state"] == "silent" else None)
    await c.start()
    await bus.serve_controller(c)
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() == "cpu":
            print(json.dumps({"cpu_s": time.process_time(), "t": time.monotonic(),
                              "up": sum(1 for h in c.hosts.hosts.values()
                                        if h.state == "up")}), flush=True)
        elif line.strip() == "silent":
            while len(silent) < hosts:
                await asyncio.sleep(0.1)
            print(json.dumps({"quiet_s": list(silent.values())}), flush=True)
        else:
            break
    await c.stop()
    await bus.stop()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]),
                 sys.argv[6]))
"""

SENDER = r"""
import asyncio, sys, time
from nfvha.bus import make_bus

async def main(url, prefix, hosts, period, mode):
    bus = make_bus(url, prefix=prefix, compute_casts=mode)
    await bus.start()
    names = [f"bench-compute-{i:04d}" for i in range(hosts)]
    started = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
    nxt = time.monotonic()
    step = period / hosts
    print("sending", flush=True)
    while True:
        for name in names:
            await bus.fanout_controller("alive", host=name, agent_started_at=started,
                                        instances=10)
            nxt += step
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]))
"""


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    text = proc.stdout.readline()
    if not text:
        raise RuntimeError("bench process exited")
    return text


def run_row(hosts: int, window_s: float, mode: str) -> dict[str, Any]:
    prefix = f"nfvha-bench-live-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="nfvha-bench-live-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ctl = subprocess.Popen([sys.executable, "-c", CONTROLLER, URL, prefix,
                            f"sqlite:///{tmp / 'c.db'}", str(hosts), str(DOWN_S), mode],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                           stderr=subprocess.DEVNULL)
    sender = None
    try:
        assert json.loads(_line(ctl)) == {"ready": True}
        sender = subprocess.Popen([sys.executable, "-c", SENDER, URL, prefix, str(hosts),
                                   str(REPORT_S), mode], stdout=subprocess.PIPE, text=True,
                                  env=env, stderr=subprocess.DEVNULL)
        _line(sender)
        time.sleep(REPORT_S * 1.5)           # every host heard once: up

        def cpu() -> dict[str, Any]:
            assert ctl.stdin is not None
            ctl.stdin.write("cpu\n")
            ctl.stdin.flush()
            return json.loads(_line(ctl))

        a = cpu()
        time.sleep(window_s)
        b = cpu()
        sender.terminate()
        sender.wait(10)
        stopped = time.monotonic()
        assert ctl.stdin is not None
        ctl.stdin.write("silent\n")
        ctl.stdin.flush()
        quiet = json.loads(_line(ctl))["quiet_s"]
        flagged_after = time.monotonic() - stopped
        alives = hosts / REPORT_S * (b["t"] - a["t"])
        busy = b["cpu_s"] - a["cpu_s"]
        return {"mode": mode, "hosts": hosts, "alive_per_s": round(hosts / REPORT_S, 1),
                "hosts_up": b["up"],
                "cpu_pct_of_core": round(100 * busy / (b["t"] - a["t"]), 1),
                "cpu_ms_per_alive": round(1000 * busy / alives, 3),
                "silent_after_last_alive_s": {
                    "median": round(statistics.median(quiet), 3),
                    "p99": round(pct(quiet, 0.99) or 0, 3), "max": round(max(quiet), 3)},
                "all_flagged_within_s": round(flagged_after, 2)}
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
        if ctl.stdin is not None:
            ctl.stdin.close()
        try:
            ctl.wait(20)
        except subprocess.TimeoutExpired:
            ctl.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--hosts", default=None, help="comma-separated host counts")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    why = rabbitmq_unreachable()
    if why:
        print(f"compute_liveness: {why}")
        return 0
    sizes = [int(x) for x in a.hosts.split(",")] if a.hosts else (
        [50] if a.quick else [100, 500])
    window = 5.0 if a.quick else 20.0
    rows = [run_row(h, window, mode) for mode in ("amqp", "oslo") for h in sizes]
    if a.json:
        print(json.dumps({"report_s": REPORT_S, "down_after_s": DOWN_S, "rows": rows},
                         indent=2))
        return 0
    print(f"compute-agent liveness: alive every {REPORT_S:g} s per host, silent after "
          f"{DOWN_S:g} s; controller over RabbitMQ, {window:g} s window; path = [bus] "
          f"compute_casts (amqp: aio-pika fanout, the default; oslo: oslo.messaging)")
    print(f"{'path':>5} {'hosts':>6} {'alive/s':>8} {'up':>5} {'ctl CPU %':>10} "
          f"{'CPU ms/alive':>13} {'silent after last alive: median':>32} {'p99':>7} "
          f"{'max':>7}")
    for r in rows:
        s = r["silent_after_last_alive_s"]
        print(f"{r['mode']:>5} {r['hosts']:>6} {r['alive_per_s']:>8} {r['hosts_up']:>5} "
              f"{r['cpu_pct_of_core']:>10} {r['cpu_ms_per_alive']:>13} "
              f"{s['median']:>30} s {s['p99']:>5} s {s['max']:>5} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
