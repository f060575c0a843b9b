"""Controller and compute agent as separate processes over the real RabbitMQ.

A real guest agent (through the QEMU pty stand-in) is heartbeated by
`nfvha compute`; its faults reach `nfvha controller` over oslo.messaging and
show in the REST API. The controller is then killed, a fault happens while
it is down, and after its restart the fault is there: none lost.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import free_port, poll, require_rabbitmq, services_conf, spawn_nfvha, stop_processes

from nfvha.demo.qemu_pty import PtyChannel

pytestmark = pytest.mark.system


async def test_fault_crosses_rabbitmq_and_survives_controller_restart(sock_dir: Path) -> None:
    tmp_path = sock_dir
    url = require_rabbitmq()
    run = uuid.uuid4().hex[:8]
    port = free_port()
    instances = tmp_path / "instances"
    instances.mkdir()
    # the compute's outbox keeps the fault in memory while the controller is
    # away (no spool: the test is about the controller's restart)
    conf = services_conf(tmp_path / "nfvha.conf", url=url, run=run, port=port,
                         instances=instances, db=tmp_path / "nfvha.sqlite")
    api = f"http://127.0.0.1:{port}"
    log = tmp_path / "services.log"
    ctl = await spawn_nfvha("controller", "--config-file", str(conf), log=log)
    cmp_ = await spawn_nfvha("compute", "--config-file", str(conf), log=log)
    inst = str(uuid.uuid4())
    channel = PtyChannel(instances / f"cgcs.heartbeat.{inst}.sock", tmp_path / "vport")
    await channel.start()
    health = tmp_path / "healthy"
    health.touch()
    guest = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.guest", "--device", str(tmp_path / "vport"),
        "--interval-ms", "200", "--probe", f"file:{health},period_ms=50")
    procs = [ctl, cmp_, guest]
    try:
        def instance():
            r = httpx.get(f"{api}/v1/instances/{inst}", timeout=2)
            return r.json() if r.status_code == 200 else None

        rec = await poll(lambda: (i := instance()) and i["heartbeat"]["state"] == "enabled"
                          and i, 30, "the guest to be enabled at the controller")
        assert rec["host"] == f"compute-{run}"
        assert rec["heartbeat"]["interval_ms"] == 200

        def events(kind: str):
            r = httpx.get(f"{api}/v1/events", timeout=2)
            return [e for e in r.json() if e["instance_uuid"] == inst and e["kind"] == kind]

        # 1. a hang crosses the bus as heartbeat_loss
        guest.send_signal(signal.SIGSTOP)
        await poll(lambda: events("heartbeat_loss"), 10, "heartbeat_loss at the controller")
        guest.send_signal(signal.SIGCONT)
        await poll(lambda: (i := instance()) and i["heartbeat"]["state"] == "enabled", 10,
                    "recovery after SIGCONT")

        # 2. controller killed; a fault happens while it is down; restart; nothing lost
        ctl.send_signal(signal.SIGKILL)
        await ctl.wait()
        health.unlink()
        await asyncio.sleep(1.0)  # the compute agent detects and keeps retrying meanwhile
        ctl = await spawn_nfvha("controller", "--config-file", str(conf), log=log)
        procs[0] = ctl
        got = await poll(lambda: events("unhealthy"), 30, "the fault detected while the "
                          "controller was down")
        assert len(got) == 1, got
    finally:
        await stop_processes(procs, grace=10)
        await channel.close()
        if any(p.returncode not in (0, -15, -9) for p in procs[:2]):
            print(log.read_text()[-4000:])
