"""OPNFV single-port mode, both sides set: heartbeat and server group share the
``cgcs.heartbeat`` port through the base layer. Real guest agents
(``nfvha-guest --single-port``) over the QEMU pty stand-in register and are
heartbeated; their server-group traffic goes through the agent's relay
device, where the unchanged GroupClient broadcasts and hears a peer's
heartbeat failure as a notification."""
from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.controller.service import Controller
from nfvha.demo.qemu_pty import PtyChannel
from nfvha.guest.group import GroupClient, GroupError
from nfvha.protocol.sgsession import SessionConfig


async def _until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_single_port_heartbeat_and_group_share_the_heartbeat_port(
        sock_dir: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    ctl = Controller(db_url=f"sqlite:///{sock_dir / 'db.sqlite'}", bus=bus)
    await ctl.start()
    await bus.serve_controller(ctl)
    agent = ComputeAgent("host-sp", sock_dir, bus, scan_interval_s=0.05,
                         messaging_config=SessionConfig(instance="", single_port=True))
    uuids = [str(uuid.uuid4()) for _ in range(2)]
    chans, procs, clients = [], [], []
    states: dict[str, str] = {}
    agent.add_observer(lambda u, out, _m: type(out).__name__ == "StateChanged"
                       and states.__setitem__(u, out.state))
    await agent.start()
    try:
        await ctl.servergroups.put_group("sp", "pair", uuids)
        for u in uuids:
            ch = PtyChannel(sock_dir / f"cgcs.heartbeat.{u}.sock", sock_dir / f"{u[:8]}.hb")
            await ch.start()
            chans.append(ch)
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nfvha.guest", "--device", str(sock_dir / f"{u[:8]}.hb"),
                "--interval-ms", "200", "--single-port",
                "--group-device", str(sock_dir / f"{u[:8]}.grp")))
        await _until(lambda: all(states.get(u) == "enabled" for u in uuids), 20,
                     "both guests registered through the base layer")
        await _until(lambda: all((sock_dir / f"{u[:8]}.grp").exists() for u in uuids), 5,
                     "the relay devices")
        await _until(lambda: all(
            (r := ctl.servergroups.groups.instance(u)) is not None and r.host == "host-sp"
            for u in uuids), 5, "placement")
        a, b = (GroupClient(str(sock_dir / f"{u[:8]}.grp")) for u in uuids)
        clients += [a, b]
        got: list[tuple[str, str]] = []
        notes: list[dict] = []
        b.on_broadcast(lambda src, data: got.append((src, data)))
        b.on_notification(notes.append)
        a.broadcast("over the shared port")

        async def poll_until(cond, what: str) -> None:
            deadline = time.monotonic() + 10
            while not cond():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                for c in clients:
                    try:
                        c.poll(0)
                    except GroupError:
                        pass
                await asyncio.sleep(0.01)

        await poll_until(lambda: got, "the broadcast at b")
        assert got == [(uuids[0], "over the shared port")]
        procs[0].send_signal(signal.SIGSTOP)  # a hangs: nfvha heartbeat failed
        await poll_until(lambda: any(n["payload"].get("heartbeat") == "failed"
                                     for n in notes), "b told that a failed")
        note = next(n for n in notes if n["payload"].get("heartbeat") == "failed")
        assert note["payload"]["instance_id"] == uuids[0]
        assert states[uuids[1]] == "enabled"  # b's own heartbeat unaffected
        answer: list = []  # status() would block this loop, which runs the agent too
        b.start_status(5, lambda members, complete: answer.append((members, complete)))
        await poll_until(lambda: answer, "the status answer")
        members, complete = answer[0]
        assert complete
        assert [m["instance_id"] for m in members] == [uuids[1], uuids[0]]
        assert [m["heartbeat"] for m in members] == ["enabled", "failed"]
    finally:
        for c in clients:
            c.close()
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
            await p.wait()
        await agent.stop()
        await ctl.stop()
        await bus.stop()
        for ch in chans:
            await ch.close()
