"""Plain QEMU, no Nova: a real VM started as libvirt starts it (``-name
guest=NAME``, ``-uuid``) with a heartbeat port (socket named by uuid) and a
``cgcs.messaging`` port (socket named by instance name), in a server group
named by instance names with a StarlingX-wire peer. The compute agent reads
the VM's uuid from the QEMU behind the messaging socket, so the peer's status
query shows the VM's heartbeat, and the peer is told when the VM's guest agent
hangs — which, before the link, it never was."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from qemu_vm import QemuVM, require_vm
from servergroup_wire_peer import WirePeer

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.controller.service import Controller

NAME = "instance-0000beef"
INTERVAL_MS = 500


async def _until(cond, timeout: float, what: str, vm: QemuVM) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, (f"timed out waiting for {what}\n--- console ---\n"
                                             f"{vm.console()[-2000:]}")
        await asyncio.sleep(0.02)


async def test_a_vms_heartbeat_reaches_its_group_named_by_instance_names(
        sock_dir: Path) -> None:
    require_vm()
    vm = QemuVM(sock_dir, name=NAME, interval_ms=INTERVAL_MS,
                extra_ports={"cgcs.messaging": f"cgcs.messaging.{NAME}.sock"})
    vm.start()
    peer = WirePeer(sock_dir / "cgcs.messaging.peer-1.sock")
    await peer.start()
    bus = make_bus("inproc://")
    await bus.start()
    ctl = Controller(db_url=f"sqlite:///{sock_dir / 'db.sqlite'}", bus=bus)
    await ctl.start()
    await bus.serve_controller(ctl)
    agent = ComputeAgent("qemu-host", sock_dir, bus, scan_interval_s=0.05)
    states: dict[str, str] = {}
    agent.add_observer(lambda u, out, _m: type(out).__name__ == "StateChanged"
                       and states.__setitem__(u, out.state))
    stopped = False
    try:
        await ctl.servergroups.put_group("pair", "pair", [NAME, "peer-1"])
        await agent.start()
        groups = ctl.servergroups.groups
        await _until(lambda: states.get(vm.instance_uuid) == "enabled", 60,
                     "the VM heartbeating", vm)
        await _until(lambda: (r := groups.instance(NAME)) is not None
                     and r.uuid == vm.instance_uuid, 10, "the link from QEMU", vm)
        await asyncio.wait_for(peer.connected.wait(), 10)

        peer.status_query(7)
        await peer.wait_for(lambda p: p.app("status_response_done"))
        members = {d["data"]["instance_name"]: d["data"] for d in peer.app("status_response")}
        assert members[NAME]["instance_id"] == vm.instance_uuid
        assert members[NAME]["heartbeat"] == "enabled"

        await asyncio.to_thread(vm.control, "stop")      # the guest agent hangs
        stopped = True
        note = await peer.wait_for(lambda p: [
            n["data"]["payload"] for n in p.app("notification")
            if n["data"]["payload"].get("heartbeat") == "failed"], timeout=20)
        assert note[0]["instance_id"] == vm.instance_uuid
    finally:
        if stopped:
            await asyncio.to_thread(vm.control, "cont")
        await agent.stop()
        await ctl.stop()
        await bus.stop()
        await peer.close()
        vm.stop()
