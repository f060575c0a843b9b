"""The controller's view of a compute's instances heals itself: a state cast
lost on the way, a record lost from the store, an instance whose channel is
gone (nothing is cast for that) — each is noticed by the periodic digest
(`sync`) and repaired by a full `hello`; and an agent in step is never asked.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import until
from sqlalchemy import delete, update

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.controller.service import Controller
from nfvha.controller.store import instances

ROOT = Path(__file__).resolve().parent.parent
SYNC_S = 0.2


def spawn(directory: Path, count: int) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfvha.compute.simguest", "--dir", str(directory),
         "--count", str(count), "--behaviour", "normal", "--interval-ms", "100"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["ready"]


async def test_lost_casts_and_gone_instances_are_repaired_by_the_digest(
        sock_dir: Path, tmp_path: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    controller = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], bus=bus)
    await controller.start()
    await bus.serve_controller(controller)
    agent = ComputeAgent("host-a", sock_dir, bus, scan_interval_s=0.05,
                         sync_interval_s=SYNC_S, messaging=False)
    proc, uuids = spawn(sock_dir, 3)
    await agent.start()

    async def view() -> dict[str, str]:
        return {i["uuid"]: i["heartbeat"]["state"] for i in await controller.list_instances()}

    async def enabled_everywhere() -> bool:
        return await view() == dict.fromkeys(uuids, "enabled")

    try:
        await until(lambda: all(agent.sessions.get(u) and agent.sessions[u].state.phase
                                == "enabled" for u in uuids))
        for _ in range(200):
            if await enabled_everywhere():
                break
            await asyncio.sleep(0.02)
        assert await enabled_everywhere()

        # in step: several digests go by and nobody is asked for a resync
        await asyncio.sleep(5 * SYNC_S)
        assert agent.counters["resyncs"] == 0
        assert controller.metrics.resyncs._value.get() == 0

        # the store loses one record and another's state change "never arrived"
        assert controller.store is not None
        with controller.store.engine.begin() as conn:
            conn.execute(delete(instances).where(instances.c.uuid == uuids[0]))
            conn.execute(update(instances).where(instances.c.uuid == uuids[1])
                         .values(state="waiting", health=None))
        for _ in range(200):
            if await enabled_everywhere():
                break
            await asyncio.sleep(0.02)
        assert await enabled_everywhere()
        assert agent.counters["resyncs"] >= 1

        # an instance's channel goes away: nothing is cast for that, the digest
        # notices and the controller forgets it
        assert proc.stdin is not None
        proc.stdin.write(f"close {uuids[2]}\n")
        proc.stdin.flush()
        await until(lambda: uuids[2] not in agent.sessions)
        for _ in range(200):
            if uuids[2] not in await view():
                break
            await asyncio.sleep(0.02)
        assert await view() == dict.fromkeys(uuids[:2], "enabled")

        # and in step again afterwards
        before = agent.counters["resyncs"]
        await asyncio.sleep(5 * SYNC_S)
        assert agent.counters["resyncs"] == before
    finally:
        await agent.stop()
        assert proc.stdin is not None
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait(5)
        await controller.stop()
        await bus.stop()


async def test_a_malformed_sync_is_refused_not_fatal(tmp_path: Path) -> None:
    controller = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await controller.start()
    try:
        for bad in ({"host": "", "count": 1, "digest": "x"},
                    {"host": ["h"], "count": 1, "digest": "x"},
                    {"host": "h", "count": 1, "digest": "x" * 1000},
                    {"host": "h", "count": 1, "digest": None}):
            r = await controller.sync(**bad)
            assert r["ok"] is False and r["error"]
        # a digest that differs without a bus to answer on is still just a report
        assert await controller.sync(host="h", count=0, digest="0" * 40) == {
            "ok": True, "in_step": False}
    finally:
        await controller.stop()
