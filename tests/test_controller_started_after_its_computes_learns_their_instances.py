"""A compute agent that starts before any controller (a cloud coming up, or
every controller restarting) casts its hello and its guests' state changes
to nobody: RabbitMQ drops what no queue is bound for. The controller, once on
the bus, asks every compute agent to resync, so it knows their instances at
once, not after the periodic digest (`sync_interval_s`, here set to 10 min so
that it cannot be what helps). Separate processes, the real RabbitMQ, a real
guest agent; and the compute's `alive` casts that nobody heard yet leave no
error in its log.
"""
from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import free_port, poll, require_rabbitmq, services_conf, spawn_nfvha, stop_processes

from nfvha.demo.qemu_pty import PtyChannel

pytestmark = pytest.mark.system


async def test_a_controller_started_last_knows_the_running_guests_at_once(
        sock_dir: Path) -> None:
    url = require_rabbitmq()
    run = uuid.uuid4().hex[:8]
    port = free_port()
    instances = sock_dir / "instances"
    instances.mkdir()
    conf = services_conf(sock_dir / "nfvha.conf", url=url, run=run, port=port,
                         instances=instances, db=sock_dir / "nfvha.sqlite",
                         heartbeat="sync_interval_s = 600\n")
    compute_log, controller_log = sock_dir / "compute.log", sock_dir / "controller.log"
    inst = str(uuid.uuid4())
    channel = PtyChannel(instances / f"cgcs.heartbeat.{inst}.sock", sock_dir / "vport")
    await channel.start()
    procs = [await spawn_nfvha("compute", "--config-file", str(conf), log=compute_log)]
    guest = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.guest", "--device", str(sock_dir / "vport"),
        "--interval-ms", "200", stderr=asyncio.subprocess.PIPE)
    procs.append(guest)
    api = f"http://127.0.0.1:{port}"
    try:
        assert guest.stderr is not None
        registered = b""
        while b"registered with the host" not in registered:      # the compute has it
            registered = await asyncio.wait_for(guest.stderr.readline(), 30)
        await asyncio.sleep(2.5)       # an `alive` or two go out to no controller
        procs.append(await spawn_nfvha("controller", "--config-file", str(conf),
                                  log=controller_log))
        await poll(lambda: httpx.get(f"{api}/healthz", timeout=2).status_code == 200, 60,
                   "the controller's API")
        up = time.monotonic()

        def instance():
            r = httpx.get(f"{api}/v1/instances/{inst}", timeout=2)
            return r.json() if r.status_code == 200 else None

        rec = await poll(lambda: (i := instance()) and i["heartbeat"]["state"] == "enabled"
                         and i, 20, "the running guest at the controller")
        known_after = time.monotonic() - up
        assert rec["host"] == f"compute-{run}"
        assert known_after < 20          # not the 600 s digest
        assert "controller asked for a resync" in compute_log.read_text()
        assert "Unhandled message" not in compute_log.read_text()
        assert " ERROR " not in compute_log.read_text()
    finally:
        await stop_processes(procs)
        await channel.close()
