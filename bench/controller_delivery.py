"""Controller fault path: fault() ack latency (event + deliveries committed)
and fault received → sink acknowledged (webhook stand-in on loopback), on
SQLite and, when reachable, PostgreSQL and MariaDB. Prints what it measured.
Usage: python bench/controller_delivery.py [--quick]"""
from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone

from sqlalchemy import create_engine, text

from nfvha.controller import Controller
from nfvha.controller.reporters.webhook import WebhookReporter
from nfvha.standins.webhook import WebhookStandin

SERVERS = {"postgresql": ("postgresql+psycopg2://postgres@127.0.0.1/", "postgres", 5432),
           "mariadb": ("mysql+pymysql://root@127.0.0.1/", "mysql", 3306)}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def fault() -> dict:
    return {"id": str(uuid.uuid4()), "instance_uuid": str(uuid.uuid4()), "host": "bench",
            "kind": "heartbeat_loss", "corrective_action": "reboot", "detail": "",
            "detected_at": datetime.now(timezone.utc).isoformat()}


async def run(url: str, n: int, burst: int) -> dict:
    async with WebhookStandin() as hook:
        c = Controller(url, [WebhookReporter(hook.url + "/f")])
        lat: list[float] = []
        c.listeners.append(lambda w: lat.append(w["latency_s"]) if w.get("status") == "delivered"
                           else None)
        await c.start()
        try:
            acks = []
            for _ in range(n):  # one at a time, as a quiet cloud sends them
                t = time.perf_counter()
                await c.fault(fault())
                acks.append(time.perf_counter() - t)
                await c.wait_idle(30)
            seq = list(lat)
            lat.clear()
            t = time.perf_counter()
            await asyncio.gather(*(c.fault(fault()) for _ in range(burst)))
            await c.wait_idle(120)
            burst_s = time.perf_counter() - t
        finally:
            await c.stop()
    return {"ack": acks, "deliver": seq, "burst_lat": list(lat), "burst_s": burst_s}


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


async def main(quick: bool) -> None:
    n, burst = (50, 50) if quick else (300, 300)
    tmp = tempfile.mkdtemp()
    targets = [("sqlite", f"sqlite:///{tmp}/bench.sqlite", None)]
    for kind, (base, admin_db, port) in SERVERS.items():
        if reachable(port):
            targets.append((kind, base, admin_db))
    print(f"{n} faults one at a time, then a burst of {burst}; sink = webhook on loopback")
    print(f"{'store':<11} {'ack med':>8} {'ack p99':>8} {'deliv med':>10} {'deliv p99':>10} "
          f"{'burst p99':>10} {'burst/s':>8}   (ms)")
    for kind, url, admin_db in targets:
        dbname = None
        if admin_db is not None:
            dbname = f"nfvha_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(url + admin_db, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {dbname}"))
            url = url + dbname
        try:
            r = await run(url, n, burst)
        finally:
            if dbname is not None:
                with admin.connect() as conn:
                    force = " WITH (FORCE)" if kind == "postgresql" else ""
                    conn.execute(text(f"DROP DATABASE {dbname}{force}"))
                admin.dispose()
        ms = lambda xs, p: pct(xs, p) * 1000  # noqa: E731
        print(f"{kind:<11} {statistics.median(r['ack'])*1000:8.2f} {ms(r['ack'], 99):8.2f} "
              f"{statistics.median(r['deliver'])*1000:10.2f} {ms(r['deliver'], 99):10.2f} "
              f"{ms(r['burst_lat'], 99):10.1f} {burst / r['burst_s']:8.0f}")


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv))
