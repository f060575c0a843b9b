"""The guest's own lifecycle in a real VM, as recovery tests under libvirt need it.

One VM (QEMU, TCG; tests/qemu_vm.py, docs/qemu-test-vm.md) booted as a
libvirt domain boots the shared image: one initrd, the settings on the kernel
command line (interval 500 ms, corrective action ``stop``), a pvpanic device,
qemu-ga's port, reboots allowed, a QMP monitor. It boots WITHOUT the
heartbeat port. In order (the tests share the VM; 3 boots in all):

1. the port is hot-plugged into the running guest: the agent, started at
   boot and waiting, finds it and registers; unplugged, it waits again (one
   log line); re-plugged, it registers again, the same process;
2. qemu-ga answers on its port;
3. ``reboot`` from inside: the agent says exit, the VM resets and comes back
   (another boot id), the agent registers again;
4. ``panic``: the kernel panics, pvpanic tells QEMU (GUEST_PANICKED, the VM
   paused); the compute agent sees heartbeat_loss with the guest's ``stop``;
   a system_reset brings it back;
5. ``poweroff`` from inside: exit, then QEMU ends with the guest's shutdown.

The host side is the real ComputeAgent on the in-process bus.

    .venv/bin/pytest -s tests/test_qemu_guest_lifecycle.py   # -s prints the figures
"""
from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from conftest import missing
from qemu_vm import QemuVM, require_vm

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.protocol.host import HostConfig

pytestmark = [pytest.mark.system, pytest.mark.slow]

INTERVAL_MS = 500
ACTION = "stop"  # not the agent's default (reboot): proves the command line reached it
WAIT_S = 60.0  # generous: TCG on a loaded 2-core machine, a boot is 3-7 s
WAITING_LINE = "no port /dev/virtio-ports/cgcs.heartbeat: waiting for it to appear"
GONE_LINE = "port /dev/virtio-ports/cgcs.heartbeat is gone; waiting for it to come back"


@pytest.fixture(scope="module")
def vm() -> Iterator[QemuVM]:
    require_vm()
    with QemuVM(interval_ms=INTERVAL_MS, corrective_action=ACTION, config="cmdline",
                heartbeat_port=False, qga_port=True, qmp=True, reboot=True,
                panic_device="isa", panic_action="pause", kernel_panic=0) as machine:
        image = machine.image
        assert image is not None
        print(f"\n[qemu] booted to the control port in {machine.boot_s:.2f} s, no heartbeat "
              f"port (kernel {image.kernel_release}, Python {image.python_version}, initrd "
              f"{image.initrd_bytes / 1e6:.1f} MB, qemu-ga {image.qemu_ga})")
        yield machine


class Recorder:
    """The controller's bus endpoint: what the compute agent reports."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []

    async def hello(self, host: str, instances: list[dict[str, Any]],
                    agent_started_at: Any = None) -> None:
        pass

    async def instance_state(self, **kwargs: Any) -> None:
        kwargs["mono"] = time.monotonic()
        self.states.append(kwargs)

    async def fault(self, event: dict[str, Any]) -> dict[str, Any]:
        self.faults.append(event)
        return {"ok": True, "id": event["id"]}

    async def alive(self, **kwargs: Any) -> None:
        pass

    async def sync(self, **kwargs: Any) -> None:
        pass


class Host:
    def __init__(self, vm: QemuVM, rec: Recorder) -> None:
        self.vm = vm
        self.rec = rec

    def states(self, after: float = 0.0) -> list[dict[str, Any]]:
        return [s for s in self.rec.states
                if s["instance_uuid"] == self.vm.instance_uuid and s["mono"] >= after]

    def faults(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.rec.faults
                if f["instance_uuid"] == self.vm.instance_uuid and kind in (None, f["kind"])]

    def state_since(self, state: str, after: float) -> dict[str, Any] | None:
        return next((s for s in self.states(after) if s["state"] == state), None)

    async def until(self, what: str, cond: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                             f"states={self.states()[-5:]} faults={self.faults()}\n"
                             f"--- guest console ---\n{self.vm.console()[-3000:]}")

    async def plugged(self) -> None:
        """The heartbeat port is in the guest (an earlier test may have failed
        with it unplugged: plug it, rather than fail every later test too)."""
        if "cgcs.heartbeat" not in await self.control("ports"):
            await asyncio.to_thread(self.vm.plug_heartbeat)

    async def enabled(self, after: float = 0.0) -> dict[str, Any]:
        state = await self.until("the guest enabled", lambda: self.state_since("enabled", after))
        # The settings came from the kernel command line.
        assert (state["interval_ms"], state["corrective_action"], state["name"]) == (
            INTERVAL_MS, ACTION, self.vm.hostname), state
        return state

    async def control(self, command: str, timeout: float = 15.0) -> str:
        # The control socket blocks; keep the event loop (the compute agent) running.
        return await asyncio.to_thread(self.vm.control, command, timeout)

    async def qmp(self, command: str, **arguments: Any) -> Any:
        assert self.vm.qmp is not None
        return await asyncio.to_thread(self.vm.qmp.execute, command, **arguments)


@pytest.fixture
async def host(vm: QemuVM) -> AsyncIterator[Host]:
    bus = make_bus("inproc://")
    await bus.start()
    rec = Recorder()
    await bus.serve_controller(rec)
    agent = ComputeAgent("qemu-lifecycle-host", vm.workdir, bus, host_config=HostConfig())
    await agent.start()
    try:
        yield Host(vm, rec)
    finally:
        await agent.stop()
        await bus.stop()


async def _console_has(vm: QemuVM, text: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while text not in vm.console():
        assert time.monotonic() < deadline, f"no {text!r} on the console:\n{vm.console()[-3000:]}"
        await asyncio.sleep(0.1)


async def test_agent_registers_on_a_port_hot_plugged_into_the_running_guest(
        vm: QemuVM, host: Host) -> None:
    # /init did not wait for the missing port: the agent runs and looks for it.
    await _console_has(vm, WAITING_LINE)
    assert (await host.control("state")) in ("state S", "state R")
    t0 = time.monotonic()
    await asyncio.to_thread(vm.plug_heartbeat)
    first = await host.enabled(after=t0)
    print(f"\n[qemu] port hot-plugged -> guest enabled at the host: "
          f"{first['mono'] - t0:.2f} s (agent polls every 0.5 s)")
    assert "cgcs.heartbeat" in await host.control("ports")

    await asyncio.to_thread(vm.unplug_heartbeat)
    await _console_has(vm, GONE_LINE)
    await asyncio.sleep(2.0)  # several polls of the agent with the port gone
    assert (await host.control("state")) in ("state S", "state R")
    t1 = time.monotonic()
    await asyncio.to_thread(vm.plug_heartbeat)
    again = await host.enabled(after=t1)
    print(f"[qemu] port re-plugged -> guest enabled again: {again['mono'] - t1:.2f} s")
    console = vm.console()
    # One line for the unplug, not one per poll; nothing crashed; one agent process.
    assert console.count(GONE_LINE) == 1 and console.count(WAITING_LINE) == 1, console[-3000:]
    assert "Traceback" not in console, console[-3000:]
    assert console.count("agent started") == 1


def test_qemu_guest_agent_answers_on_its_port(vm: QemuVM) -> None:
    image = vm.image
    assert image is not None and vm.qga_socket is not None
    if not image.qemu_ga:
        missing("qemu-ga is not in the image (apt-get install qemu-guest-agent)")
    assert (vm.control("qga")).startswith("qga ")  # its process, started by /init
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(vm.qga_socket))
        s.settimeout(WAIT_S)
        s.sendall(b'{"execute": "guest-ping"}\n')
        buf = b""
        while b"\n" not in buf:
            data = s.recv(4096)
            assert data, "QEMU closed qemu-ga's socket"
            buf += data
    assert json.loads(buf.split(b"\n")[0]) == {"return": {}}


async def test_reboot_from_inside_sends_exit_and_the_guest_comes_back(
        vm: QemuVM, host: Host) -> None:
    await host.plugged()
    await host.enabled()
    boot_id = await host.control("bootid")
    t0 = time.monotonic()
    assert await host.control("reboot") == "reboot"
    exited = await host.until("disabled (the agent's exit)",
                              lambda: host.state_since("disabled", t0))
    back_s = await asyncio.to_thread(vm.wait_rebooted, t0)
    assert await host.control("bootid") != boot_id  # a new boot, not a reconnect
    enabled = await host.enabled(after=exited["mono"])
    print(f"\n[qemu] reboot from inside: exit at the host after {exited['mono'] - t0:.2f} s, "
          f"guest reset -> /init answers {back_s:.2f} s, agent registered again "
          f"{enabled['mono'] - t0:.2f} s after the command")
    assert host.faults() == []  # a clean reboot is no fault


async def test_kernel_panic_reaches_the_host_through_pvpanic(vm: QemuVM, host: Host) -> None:
    assert vm.qmp is not None
    await host.plugged()
    await host.enabled()
    boot_id = await host.control("bootid")
    t0 = time.monotonic()
    assert await host.control("panic") == "panic"
    event = await asyncio.to_thread(vm.qmp.wait_event, "GUEST_PANICKED", WAIT_S, t0)
    assert event["data"]["action"] == "pause"  # -action panic=pause, as under libvirt
    assert (await host.qmp("query-status"))["status"] == "guest-panicked"
    assert "Kernel panic - not syncing: sysrq triggered crash" in vm.console()
    # The paused guest no longer answers: nfvha's own detection, with the guest's action.
    fault = (await host.until("heartbeat_loss", lambda: host.faults("heartbeat_loss")))[0]
    assert fault["corrective_action"] == ACTION
    print(f"\n[qemu] panic: GUEST_PANICKED {event['mono'] - t0:.2f} s after the command, "
          f"heartbeat_loss {fault['detected_mono'] - t0:.2f} s")
    # What libvirt's on_crash=restart amounts to: a reset; the guest comes back.
    t1 = time.monotonic()
    await host.qmp("system_reset")
    await host.qmp("cont")
    await asyncio.to_thread(vm.wait_booted, t1)
    assert await host.control("bootid") != boot_id
    await host.enabled(after=t1)


# Keep this one last: it ends the module's VM.
async def test_poweroff_from_inside_sends_exit_and_ends_qemu(vm: QemuVM, host: Host) -> None:
    assert vm.qmp is not None and vm.proc is not None
    await host.plugged()
    await host.enabled()
    t0 = time.monotonic()
    assert await host.control("poweroff") == "poweroff"
    await host.until("disabled (the agent's exit)", lambda: host.state_since("disabled", t0))
    assert await asyncio.to_thread(vm.proc.wait, WAIT_S) == 0
    # QEMU's last word: the guest shut itself down (libvirt: shut off, reason SHUTDOWN).
    event = await asyncio.to_thread(vm.qmp.wait_event, "SHUTDOWN", 5.0, t0)
    assert event["data"] == {"guest": True, "reason": "guest-shutdown"}, event
    print(f"\n[qemu] poweroff from inside: QEMU ended {time.monotonic() - t0:.2f} s after "
          f"the command")
    assert host.faults() == []
