"""Without Nova, the compute agent names the VM behind a messaging channel.

QEMU listens on its chardev sockets; ``SO_PEERCRED`` on the agent's end gives
QEMU's pid, whose command line (``-name guest=NAME,...``, ``-uuid UUID``, as
libvirt writes it) ties the channel's instance name to the uuid its heartbeat
is known by. The controller takes those links (``sg_links``) so a group named
by instance names hears its members' heartbeat, and one named by uuids hears
their broadcasts. Bad links are refused and counted, never raised.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import CastRecorder

from nfvha.compute import qemu_peer
from nfvha.controller.servergroup_service import ServerGroupService

U = "6c1a8e36-2f43-4bf5-9d0e-5d1b2f6a7c10"


def test_qemu_command_lines_name_the_vm() -> None:
    libvirt = ["/usr/bin/qemu-system-x86_64", "-name", "guest=instance-0000002a,debug-threads=on",
               "-S", "-uuid", U.upper(), "-m", "2048"]
    assert qemu_peer.parse_cmdline(libvirt) == (U, "instance-0000002a")
    assert qemu_peer.parse_cmdline(["qemu", "--name", "web-1", "--uuid", U]) == (U, "web-1")
    assert qemu_peer.parse_cmdline(["qemu", "-name", "process=qemu:x", "-uuid", "42"]) \
        == (None, None)                              # no guest name, no uuid
    assert qemu_peer.parse_cmdline(["qemu", "-m", "256"]) == (None, None)
    assert qemu_peer.parse_cmdline(["qemu", "-uuid"]) == (None, None)     # cut short
    assert qemu_peer.identify(2 ** 22 + 12345) == (None, None)            # no such pid


def test_the_listener_at_the_other_end_of_a_socket_is_identified(sock_dir: Path) -> None:
    path = sock_dir / "cgcs.messaging.instance-0000002a.sock"
    # a process that listens like QEMU's chardev and carries its options
    code = ("import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
            "s.listen(); c,_=s.accept(); c.recv(1)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), "-name",
                             "guest=instance-0000002a,debug-threads=on", "-uuid", U])
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            assert qemu_peer.peer_pid(s) == proc.pid
            assert qemu_peer.vm_of(s) == (U, "instance-0000002a")
            s.send(b"x")
    finally:
        proc.kill()
        proc.wait()
    # a listener that is no QEMU (this test) names nothing
    other = sock_dir / "plain.sock"
    with socket.socket(socket.AF_UNIX) as srv, socket.socket(socket.AF_UNIX) as s:
        srv.bind(str(other))
        srv.listen()
        s.connect(str(other))
        assert qemu_peer.peer_pid(s) == os.getpid()
        assert qemu_peer.vm_of(s) == (None, None)


async def test_a_link_lets_heartbeat_and_broadcasts_cross_between_name_and_uuid() -> None:
    bus = CastRecorder()
    svc = ServerGroupService(bus)
    vm, peer = str(uuid.uuid4()), str(uuid.uuid4())
    svc.groups.set_group("by-name", "", ["instance-01", "instance-02"])
    svc.groups.set_group("by-uuid", "", [vm, peer])
    await svc.sg_instances("h1", ["instance-01"])
    await svc.sg_instances("h2", ["instance-02", peer])
    def targets() -> list[str]:
        out = sorted(i for _, m, kw in bus.casts if m == "sg_deliver" for i in kw["instances"])
        bus.casts.clear()
        return out

    # unlinked: vm's heartbeat (by uuid) reaches "by-uuid" only, and the
    # broadcast from its channel (by name) "by-name" only
    await svc.on_heartbeat("h1", vm, "enabled", None)
    targets()
    await svc.on_heartbeat("h1", vm, "failed", None)
    assert targets() == [peer]
    await svc.sg_broadcast("h1", "instance-01", "hello")
    assert targets() == ["instance-02"]

    bad = [svc.sg_links("h1", ["instance-01", vm]), svc.sg_links("", {"instance-01": vm}),
           svc.sg_links("h1", {"instance-01": "not-a-uuid"}),
           svc.sg_links("h1", {"n" * 300: vm}), svc.sg_links("h1", {"instance-01": 7}),
           svc.sg_links("h1", {vm: vm})]
    for coro in bad:
        res = await coro
        assert res.get("error") if not res["ok"] else res["linked"] == 0, res
    assert svc.counters["refused"] == len(bad)
    assert (await svc.sg_links("h1", {"instance-01": vm.upper()})) == {"ok": True, "linked": 1}
    rec = svc.groups.instance("instance-01")
    assert rec is not None and rec.uuid == vm and rec.host == "h1"

    await svc.on_heartbeat("h1", vm, "enabled", None)
    bus.casts.clear()
    await svc.on_heartbeat("h1", vm, "failed", None)         # linked: both groups hear
    notes = [msg for _, m, kw in bus.casts if m == "sg_deliver" for msg in kw["messages"]]
    assert notes and all(n["msg_type"] == "notification" for n in notes)
    assert targets() == sorted(["instance-02", peer])
    await svc.sg_broadcast("h1", "instance-01", "hello")
    assert targets() == sorted(["instance-02", peer])


async def test_the_compute_agent_links_the_channel_at_the_controller(sock_dir: Path) -> None:
    from nfvha.bus import make_bus
    from nfvha.compute.agent import ComputeAgent
    from nfvha.controller.service import Controller

    path = sock_dir / "cgcs.messaging.instance-0000002a.sock"
    code = ("import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
            "s.listen(); c,_=s.accept(); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), "-name",
                             "guest=instance-0000002a", "-uuid", U])
    bus = make_bus("inproc://")
    await bus.start()
    ctl = Controller(db_url=f"sqlite:///{sock_dir / 'db.sqlite'}", bus=bus)
    await ctl.start()
    await bus.serve_controller(ctl)
    agent = ComputeAgent("h1", sock_dir, bus, scan_interval_s=0.05)
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            await asyncio.sleep(0.02)
        await agent.start()
        groups = ctl.servergroups.groups
        while (rec := groups.instance("instance-0000002a")) is None or rec.uuid != U:
            assert time.monotonic() < deadline, rec
            await asyncio.sleep(0.02)
        assert rec.host == "h1" and groups.instance(U) == rec

        # the VM goes away: its channel is forgotten and announced gone once,
        # not again at every scan
        casts: list[str] = []
        cast, fanout = agent._cast, bus.fanout_controller
        agent._cast = lambda method, **kw: (casts.append(method), cast(method, **kw))
        # the placement goes to every controller (a fanout)
        bus.fanout_controller = lambda method, **kw: (  # type: ignore[method-assign]
            casts.append(method), fanout(method, **kw))[1]
        proc.kill()
        proc.wait()
        path.unlink()
        assert agent.messaging is not None
        while agent.messaging.sessions:
            assert time.monotonic() < deadline + 10
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)                  # 20 scans
        assert casts.count("sg_instances") == 1, casts
        assert "sg_links" not in casts
    finally:
        await agent.stop()
        await ctl.stop()
        await bus.stop()
        proc.kill()
        proc.wait()
