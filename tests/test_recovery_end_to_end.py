"""A hung guest is reset and recovers, end to end with real parts: an
nfvha-guest process on a pseudo-terminal (the virtio-serial stand-in), the
real compute agent, the controller with the recovery sink (mode libvirt) on
the in-process bus. The agent's instance source "resets" the VM by killing
the hung guest and starting a fresh one (what a domain reset does to the
processes inside). The fault is reported once, the compute is asked once,
the action is issued and then succeeds when the new guest heartbeats, with
recovery_ms measured from detection."""
from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.sources.directory import DirectorySource
from nfvha.controller.recovery.libvirt import LibvirtExecutor
from nfvha.controller.recovery.policy import Policy
from nfvha.controller.recovery.sink import RecoverySink
from nfvha.controller.recovery.wiring import attach
from nfvha.controller.reporters.log import LogReporter
from nfvha.controller.service import Controller
from nfvha.demo.qemu_pty import PtyChannel
from nfvha.protocol.host import HostConfig

HOST = "cmp-e2e"


class GuestVM:
    def __init__(self, device: Path) -> None:
        self.device = device
        self.proc: asyncio.subprocess.Process | None = None
        self.boots = 0

    async def boot(self) -> None:
        self.boots += 1
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfvha.guest", "--device", str(self.device),
            "--interval-ms", "200", "--corrective-action", "reboot", "--name", "e2e-vm",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class ResettingSource(DirectorySource):
    """The instances directory, plus a reset that reboots our stand-in VM."""

    can_recover = True

    def __init__(self, directory: Path, vm: GuestVM) -> None:
        super().__init__(directory, messaging_pattern=None, scan_interval_s=0.1)
        self.vm = vm
        self.asked: list[tuple[str, str]] = []

    async def recover(self, uuid: str, action: str) -> tuple[bool, str]:
        self.asked.append((uuid, action))
        await self.vm.kill()
        await self.vm.boot()
        return True, f"{action}: guest restarted"


async def _until(cond: Any, timeout: float, what: str) -> Any:
    for _ in range(int(timeout / 0.05)):
        got = await cond()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


async def test_a_hung_guest_is_reset_once_and_its_recovery_measured(sock_dir: Path) -> None:
    tmp_path = sock_dir
    vm_uuid = str(uuid.uuid4())
    instances, devices = tmp_path / "instances", tmp_path / "dev"
    instances.mkdir()
    devices.mkdir()
    channel = PtyChannel(instances / f"cgcs.heartbeat.{vm_uuid}.sock", devices / vm_uuid)
    await channel.start()
    vm = GuestVM(devices / vm_uuid)
    source = ResettingSource(instances, vm)
    bus = make_bus("inproc://")
    await bus.start()
    sink = RecoverySink(LibvirtExecutor(bus), Policy(max_actions=3, window_s=3600,
                                                     min_uptime_s=0),
                        notice_timeout_s=2.0, recovered_timeout_s=60.0)
    c = Controller(f"sqlite:///{tmp_path}/c.sqlite", [LogReporter(), sink], bus=bus,
                   controller_id="ctl-e2e", agent_down_after_s=0)
    attach(sink, c)
    agent = ComputeAgent(HOST, instances, bus, host_config=HostConfig(failure_threshold=2),
                         messaging=False, source=source, sync_interval_s=0,
                         report_interval_s=0)
    try:
        await c.start()
        await bus.serve_controller(c)
        await agent.start()
        await vm.boot()

        async def enabled() -> bool:
            inst = await c.get_instance(vm_uuid)
            return inst is not None and inst["heartbeat"]["state"] == "enabled"

        await _until(enabled, 30, "the guest registers")
        assert vm.proc is not None
        vm.proc.send_signal(signal.SIGSTOP)              # the guest hangs

        async def succeeded() -> Any:
            evs = await c.list_events()
            acts = [e["action"] for e in evs if e["action"]]
            return acts and acts[0]["status"] == "succeeded" and (evs, acts[0])

        evs, act = await _until(succeeded, 60, "the action succeeds")
        assert [e["kind"] for e in evs] == ["heartbeat_loss"]      # the reset is no fault
        assert source.asked == [(vm_uuid.lower(), "reset")] and vm.boots == 2
        assert (act["mode"], act["action"]) == ("libvirt", "reset")
        assert "guest restarted" in act["reason"]
        assert 0 < act["recovery_ms"] < 60_000
        await c.wait_idle(10)
        [d] = [d for d in (await c.get_event(evs[0]["id"]))["deliveries"]
               if d["sink"] == "recovery"]
        assert d["status"] == "delivered" and d["attempts"] == 1
        assert await enabled()
    finally:
        await agent.stop()
        await c.stop()
        await bus.stop()
        await vm.kill()
        await channel.close()
