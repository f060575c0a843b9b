"""Votes and notices end to end (StarlingX action_notify): the REST API of a
controller process asks, over the real RabbitMQ, the compute agent process,
which asks the real guest agent (its event script decides); the answer comes
back to the controller that asked. A rejected vote says "do not proceed", a
script too slow is a timeout the guest reports itself, a frozen guest one
the host declares, a notice is complete whatever the script says, and an
unknown instance or action is refused."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, poll, require_rabbitmq, services_conf

from nfvha.demo.qemu_pty import PtyChannel
from nfvha.verify.deploy.procfs import stop_all

pytestmark = pytest.mark.system

SCRIPT = """#!/bin/sh
# $1 = revocable|irrevocable, $2 = event type
case "$2" in
  live_migrate_begin) echo "busy: checkpoint running" >&2; exit 1 ;;
  reboot) exec sleep 30 ;;
  pause) exit 1 ;;
esac
exit 0
"""


async def test_votes_and_notices_reach_the_guest_and_come_back(sock_dir: Path) -> None:
    url = require_rabbitmq()
    run = uuid.uuid4().hex[:8]
    port = free_port()
    instances = sock_dir / "i"
    instances.mkdir()
    conf = services_conf(sock_dir / "n.conf", url=url, run=run, port=port,
                         instances=instances, db=sock_dir / "n.sqlite")
    script = sock_dir / "vote.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    inst = str(uuid.uuid4())
    channel = PtyChannel(instances / f"cgcs.heartbeat.{inst}.sock", sock_dir / "vport")
    await channel.start()
    log = open(sock_dir / "services.log", "ab")  # noqa: SIM115
    procs = [subprocess.Popen([sys.executable, "-m", "nfvha.cli.main", role, "--config-file",
                               str(conf)], stdout=log, stderr=log)
             for role in ("controller", "compute")]
    guest = subprocess.Popen(
        [sys.executable, "-m", "nfvha.guest", "--device", str(sock_dir / "vport"),
         "--interval-ms", "200", "--event-script", str(script)],
        stdout=log, stderr=log)
    api = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            async def enabled() -> bool:
                r = await http.get(f"/v1/instances/{inst}")
                return r.status_code == 200 and r.json()["heartbeat"]["state"] == "enabled"

            await poll(enabled, 60, "the guest enabled")
            # what bounds the controller's wait: the times the guest registered
            facts = (await http.get(f"/v1/instances/{inst}")).json()["facts"]
            assert (facts["vote_secs"], facts["shutdown_notice_secs"]) == (8, 8)

            async def ask(action: str, **body: Any) -> dict[str, Any]:
                t0 = time.monotonic()
                r = await http.post(f"/v1/instances/{inst}/actions",
                                    json={"action": action, **body})
                assert r.status_code == 200, r.text
                return {**r.json(), "s": time.monotonic() - t0}

            ok = await ask("stop")
            assert (ok["result"], ok["proceed"], ok["host"]) == ("accept", True, f"compute-{run}")
            no = await ask("live_migrate_begin")
            assert (no["result"], no["proceed"]) == ("reject", False)
            assert "busy: checkpoint running" in no["log_msg"]
            # the script outlives the guest's deadline: the guest answers timeout itself
            slow = await ask("reboot", timeout_ms=1500)
            assert (slow["result"], slow["proceed"]) == ("timeout", True)
            assert slow["s"] < 1.5 + 5
            notice = await ask("pause", notification="irrevocable", timeout_ms=2000)
            assert (notice["result"], notice["proceed"]) == ("complete", True)

            # a frozen guest: the host's own deadline answers
            guest.send_signal(signal.SIGSTOP)
            try:
                frozen = await ask("stop", timeout_ms=300)
            finally:
                guest.send_signal(signal.SIGCONT)
            assert frozen["result"] in ("timeout", "unknown"), frozen
            assert frozen["proceed"] is True

            r = await http.post(f"/v1/instances/{uuid.uuid4()}/actions", json={"action": "stop"})
            assert r.status_code == 404
            r = await http.post(f"/v1/instances/{inst}/actions", json={"action": "explode"})
            assert r.status_code == 422
            r = await http.post(f"/v1/instances/{inst}/actions",
                                json={"action": "stop", "timeout_ms": 0})
            assert r.status_code == 422
            # votes raise no fault
            faults = [e for e in (await http.get("/v1/events")).json()
                      if e["instance_uuid"] == inst and e["kind"] != "heartbeat_loss"]
            assert faults == []
    finally:
        guest.terminate()
        guest.wait(10)
        stop_all(procs, 20)
        await channel.close()
        log.close()


def test_the_controller_waits_as_long_as_the_guest_may_take() -> None:
    from nfvha.controller.service import ACTION_WAIT_MAX_S, _guest_deadline_s

    inst = {"facts": {"vote_secs": 4, "shutdown_notice_secs": 6, "suspend_notice_secs": 7,
                      "restart_secs": 300}}
    assert _guest_deadline_s(inst, "stop", "revocable", None) == 4
    assert _guest_deadline_s(inst, "stop", "irrevocable", None) == 6
    assert _guest_deadline_s(inst, "pause", "irrevocable", None) == 7
    assert _guest_deadline_s(inst, "live_migrate_begin", "irrevocable", None) == 300
    assert _guest_deadline_s(inst, "stop", "revocable", 1500) == 1.5
    for junk in ({}, {"vote_secs": "8"}, {"vote_secs": True}, {"vote_secs": -1},
                 {"vote_secs": 10**9}):
        assert _guest_deadline_s({"facts": junk}, "stop", "revocable", None) == \
            ACTION_WAIT_MAX_S


async def test_hostile_action_requests_and_answers_are_answered_not_fatal(
        sock_dir: Path) -> None:
    import asyncio as aio

    from nfvha.bus import make_bus
    from nfvha.compute.agent import AgentEndpoint, ComputeAgent
    from nfvha.controller.service import Controller

    class Asker:
        controller_id = "ctl-1"

        def __init__(self) -> None:
            self.got: list[dict[str, Any]] = []

        async def hello(self, **kw: Any) -> None: ...

        async def action_result(self, **kw: Any) -> None:
            self.got.append(kw)

    bus = make_bus("inproc://")
    await bus.start()
    asker = Asker()
    await bus.serve_controller(asker)
    agent = ComputeAgent("h1", sock_dir, bus, messaging=False, sync_interval_s=0)
    await agent.start()
    try:
        ep = AgentEndpoint(agent)
        await ep.instance_action("r1", "ctl-1", "no-such-vm", "stop")
        await ep.instance_action("r2", "ctl-1", "no-such-vm", "stop", timeout_ms="soon")
        await ep.instance_action("r3", "ctl-1", ["not", "a", "uuid"], "stop")
        for _ in range(200):
            if len(asker.got) == 3:
                break
            await aio.sleep(0.01)
        by = {g["request_id"]: (g["result"], g["log_msg"]) for g in asker.got}
        assert by == {"r1": ("unknown", "instance not on h1"),
                      "r2": ("error", "timeout_ms must be an integer"),
                      "r3": ("unknown", "instance not on h1")}
    finally:
        await agent.stop()
        await bus.stop()

    controller = Controller(f"sqlite:///{sock_dir / 'c.db'}", [])
    await controller.start()
    try:
        assert (await controller.action_result(request_id="nobody", result="accept"))[
            "ok"] is False
        fut = aio.get_running_loop().create_future()
        controller._actions["r9"] = fut
        bad = await controller.action_result(request_id="r9", result=["accept"])
        assert bad["ok"] is False and not fut.done()
        ok = await controller.action_result(request_id="r9", result="reject" * 20,
                                            log_msg="x" * 10_000)
        assert ok == {"ok": True}
        assert len(fut.result()["result"]) == 32 and len(fut.result()["log_msg"]) == 256
    finally:
        await controller.stop()
