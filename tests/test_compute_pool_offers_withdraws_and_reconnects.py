"""The channel pool (compute/pool.py) over real UNIX sockets: an offered
channel is made and connected (after start() if offered before), a
withdrawn one is forgotten at once when unconnected and only when its
connection closes otherwise, a new socket (another inode) is connected at
once instead of after the backoff, and a withdrawal with a reason makes the
loss that follows no fault."""
from __future__ import annotations

import asyncio
import os
import socket
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from conftest import until

from nfvha.compute import pool as poolmod
from nfvha.compute.pool import ChannelPool, ChannelSpec
from nfvha.compute.session import HeartbeatHooks
from nfvha.compute.simguest import Simulator
from nfvha.protocol import host as hostsm


class Listener:
    """Plays QEMU's listening end of one chardev socket: accepts, counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> Listener:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted.append(writer)

        self.server = await asyncio.start_unix_server(on_client, str(self.path))
        return self

    def drop_clients(self) -> None:
        for w in self.accepted:
            w.close()

    async def stop(self, unlink: bool = True) -> None:
        self.drop_clients()
        if self.server is not None:
            self.server.close()
        if unlink and self.path.exists():
            self.path.unlink()


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on (QEMU gone, file left behind)."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


def hb_spec(path: Path, key: str) -> ChannelSpec:
    return ChannelSpec("heartbeat", key, str(path), os.stat(path).st_ino)


def recording_pool(**kw: Any) -> tuple[ChannelPool, list[tuple[str, Any]], list[tuple]]:
    outputs: list[tuple[str, Any]] = []
    changes: list[tuple] = []
    hooks = HeartbeatHooks(on_output=lambda s, out, now: outputs.append((s.uuid, out)))
    pool = ChannelPool(heartbeat_hooks=hooks, reconnect_max_s=0.2,
                       on_change=lambda *a: changes.append(a), **kw)
    return pool, outputs, changes


async def test_offered_channels_connect_after_start_and_withdrawn_ones_are_forgotten(
        sock_dir: Path) -> None:
    a, b = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    la = await Listener(sock_dir / "a.sock").start()
    lb = await Listener(sock_dir / "b.sock").start()
    pool, _, changes = recording_pool()
    try:
        pool.offer(hb_spec(la.path, a.upper()))  # keys of heartbeat channels are lower case
        assert list(pool.heartbeat) == [a]
        await asyncio.sleep(0.2)
        assert la.accepted == [] and pool.heartbeat[a].transport is None  # not started yet
        pool.start()
        pool.offer(hb_spec(lb.path, b))
        await until(lambda: len(la.accepted) == 1 and len(lb.accepted) == 1)
        await until(lambda: all(s.transport is not None for s in pool.heartbeat.values()))
        assert changes == [("heartbeat", a, True), ("heartbeat", b, True)]

        # an offer of what is already there changes nothing (no second connection)
        pool.offer(hb_spec(la.path, a))
        await asyncio.sleep(0.2)
        assert len(la.accepted) == 1

        # withdrawn while connected: kept until its connection closes, then
        # forgotten (not reconnected, though the socket still listens)
        pool.withdraw("heartbeat", a)
        await asyncio.sleep(0.2)
        assert a in pool.heartbeat
        la.drop_clients()
        await until(lambda: a not in pool.heartbeat)
        await asyncio.sleep(0.3)
        assert len(la.accepted) == 1 and ("heartbeat", a, False) in changes
        assert pool.counters["forgotten"] == 1

        # withdrawn, then offered again before it closed: stays and reconnects
        pool.withdraw("heartbeat", b)
        pool.offer(hb_spec(lb.path, b))
        lb.drop_clients()
        await until(lambda: len(lb.accepted) == 2)
        assert b in pool.heartbeat
    finally:
        await pool.stop()
        await la.stop()
        await lb.stop()


async def test_a_stale_socket_is_retried_and_forgotten_at_once_when_withdrawn(
        sock_dir: Path) -> None:
    u = str(uuidlib.uuid4())
    path = sock_dir / "stale.sock"
    stale_socket(path)
    pool, outputs, _ = recording_pool()
    pool.start()
    try:
        pool.offer(hb_spec(path, u))
        session = pool.heartbeat[u]
        await until(lambda: session.connect_failures >= 3)
        assert session.transport is None
        pool.withdraw("heartbeat", u)
        assert u not in pool.heartbeat and session.closing  # not after the next retry
        failures = session.connect_failures
        await asyncio.sleep(0.5)
        assert session.connect_failures == failures  # no more attempts
        assert not [o for _, o in outputs if isinstance(o, hostsm.Fault)]
    finally:
        await pool.stop()


async def test_a_new_socket_is_connected_at_once_not_after_the_backoff(
        sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a backoff far longer than the test: only "connect now" can connect in time
    monkeypatch.setattr(poolmod, "backoff_s", lambda failures, most: 60.0)
    u, v = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    pu, pv = sock_dir / "u.sock", sock_dir / "v.sock"
    stale_socket(pu)
    stale_socket(pv)
    pool, _, _ = recording_pool()
    pool.start()
    lu = lv = None
    try:
        pool.offer(hb_spec(pu, u))
        pool.offer(hb_spec(pv, v))
        await until(lambda: all(s.connect_failures == 1 for s in pool.heartbeat.values()))
        # QEMU restarts for both: new sockets at the same paths (made before
        # the old ones go, so their inodes surely differ)
        lu = await replace_socket(pu)
        lv = await replace_socket(pv)
        pool.offer(hb_spec(pu, u))                    # the source saw the new inode of u
        pool.offer(pool_spec_unchanged(pool, v))      # ... but nothing new of v
        await until(lambda: len(lu.accepted) == 1, timeout=10)
        assert pool.heartbeat[u].transport is not None
        await asyncio.sleep(0.5)
        assert lv.accepted == [] and pool.heartbeat[v].transport is None  # still backing off
    finally:
        await pool.stop()
        for listener in (lu, lv):
            if listener is not None:
                await listener.stop()


async def replace_socket(path: Path) -> Listener:
    tmp = path.with_name(path.name + ".new")
    listener = await Listener(tmp).start()
    os.rename(tmp, path)
    listener.path = path
    return listener


def pool_spec_unchanged(pool: ChannelPool, key: str) -> ChannelSpec:
    s = pool.heartbeat[key]
    return ChannelSpec("heartbeat", key, s.path, s.inode)


async def test_withdrawn_with_a_reason_the_loss_is_no_fault(sock_dir: Path) -> None:
    sim = Simulator(sock_dir, 2, "normal", 200)
    told, untold = await sim.start()
    pool, outputs, _ = recording_pool()
    pool.start()
    try:
        for u in (told, untold):
            pool.offer(hb_spec(sim.path(u), u))
        await until(lambda: all(s.state.phase == hostsm.ENABLED
                                for s in pool.heartbeat.values()))
        pool.withdraw("heartbeat", told, "domain destroyed")
        assert pool.heartbeat[told].state.phase == hostsm.DISABLED
        pool.withdraw("heartbeat", untold)            # a socket that vanished, no reason
        await asyncio.sleep(0.6)                      # more than two intervals of silence
        for u in (told, untold):
            await sim.close(u)
        await until(lambda: not pool.heartbeat)       # both forgotten once closed
        faults = [(u, o.kind) for u, o in outputs if isinstance(o, hostsm.Fault)]
        assert (untold, "channel_lost") in faults     # (a loaded machine may add a late answer)
        assert [f for f in faults if f[0] == told] == []
    finally:
        await pool.stop()
        await sim.stop()


async def test_messaging_channels_are_ignored_unless_served_and_faults_go_to_report_fault(
        sock_dir: Path) -> None:
    reported: list[tuple] = []
    pool, _, _ = recording_pool(report_fault=lambda *a: reported.append(a))
    listener = await Listener(sock_dir / "m.sock").start()
    try:
        pool.offer(ChannelSpec("messaging", "instance-1", str(listener.path)))
        pool.offer(ChannelSpec("serial", "x", str(listener.path)))
        assert pool.messaging == {} and pool.heartbeat == {}
        pool.withdraw("messaging", "instance-1", "gone")  # nothing to withdraw: no error
        pool.report_fault("u-1", "vm_crashed", "domain crashed")
        assert reported == [("u-1", "vm_crashed", "domain crashed")]
    finally:
        await pool.stop()
        await listener.stop()
