"""From a hung guest to Masakari's recovery, every part real but Nova: an
nfvha-guest process heartbeating over a pseudo-terminal (the virtio-serial
stand-in), the real compute agent, the controller with the Masakari sink,
the real Masakari API and engine (Keystone auth against the real
Keystone), the engine driving the Nova stand-in."""
from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.sources.directory import DirectorySource
from nfvha.controller.reporters.masakari import MasakariReporter
from nfvha.controller.service import Controller
from nfvha.demo.qemu_pty import PtyChannel
from nfvha.protocol.host import HostConfig
from nfvha.standins.nova import NovaStandin
from tests.test_real_masakari_notifications import Cloud, _host, _note_uuid

pytestmark = [pytest.mark.system, pytest.mark.slow]


async def _until(cond: Any, timeout: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        got = await cond()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


async def test_a_hung_guest_becomes_a_notification_the_engine_finishes(
        real_masakari, sock_dir: Path) -> None:
    """The guest stops heartbeating (SIGSTOP): the compute agent reports a
    heartbeat_loss; the controller's Masakari sink posts a VM notification
    from the compute agent's host name, which the operator registered in a
    failover segment; real Masakari accepts it (202) and its engine stops
    and starts that instance through the Nova stand-in: status
    `finished`."""
    cloud = Cloud(real_masakari.keystone)
    host, vm_uuid = _host(), str(uuid.uuid4())
    instances, devices = sock_dir / "instances", sock_dir / "dev"
    instances.mkdir()
    devices.mkdir()
    channel = PtyChannel(instances / f"cgcs.heartbeat.{vm_uuid}.sock", devices / vm_uuid)
    await channel.start()
    nova = NovaStandin(compute_hosts={host})
    await nova.start(port=cloud.ks.nova_port)
    bus = make_bus("inproc://")
    await bus.start()
    c = Controller(f"sqlite:///{sock_dir}/c.sqlite", [MasakariReporter(cloud.nfvha)], bus=bus,
                   controller_id="ctl-masakari", agent_down_after_s=0)
    agent = ComputeAgent(host, instances, bus, host_config=HostConfig(failure_threshold=2),
                         messaging=False, source=DirectorySource(
                             instances, messaging_pattern=None, scan_interval_s=0.1),
                         sync_interval_s=0, report_interval_s=0)
    guest: asyncio.subprocess.Process | None = None
    try:
        await cloud.register(host)
        await c.start()
        await bus.serve_controller(c)
        await agent.start()
        guest = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfvha.guest", "--device", str(devices / vm_uuid),
            "--interval-ms", "200", "--corrective-action", "reboot", "--name", "m-vm",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

        async def enabled() -> bool:
            inst = await c.get_instance(vm_uuid)
            return inst is not None and inst["heartbeat"]["state"] == "enabled"

        await _until(enabled, 30, "the guest registers")
        guest.send_signal(signal.SIGSTOP)

        async def delivered() -> Any:
            evs = await c.list_events()
            if not evs:
                return None
            [d] = (await c.get_event(evs[0]["id"]))["deliveries"]
            return d["status"] != "pending" and (evs, d)

        evs, d = await _until(delivered, 60, "the Masakari delivery")
        assert [e["kind"] for e in evs] == ["heartbeat_loss"]
        assert evs[0]["host"] == host
        assert d["status"] == "delivered", d
        n = await cloud.wait_status(_note_uuid(d), {"finished", "error", "failed",
                                                    "ignored"})
        assert n.status == "finished", n
        assert n.payload["instance_uuid"] == vm_uuid
        assert [(a[0], a[1]) for a in nova.actions] == [(vm_uuid, "os-stop"),
                                                        (vm_uuid, "os-start")]
    finally:
        if guest is not None and guest.returncode is None:
            guest.send_signal(signal.SIGCONT)
            guest.kill()
            await guest.wait()
        await agent.stop()
        await c.stop()
        await bus.stop()
        await nova.stop()
        await channel.close()
        cloud.close()
