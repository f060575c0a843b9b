"""compute/guestio.py with ``read_delay``: when a guest socket becomes
readable the pass waits, and every socket readable by then is read in that
one pass; nothing is read early, nothing is lost, input arriving after the
pass wakes the loop again, and closing while a batch gathers leaves no pass
behind. Real UNIX socket pairs. The agent takes the delay from
[heartbeat] read_batch_ms, and its guests' heartbeats run on it."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from conftest import until
from oslo_config import cfg

from nfvha import conf as nfvha_conf
from nfvha.cli.services import start_stack
from nfvha.compute import guestio
from nfvha.compute.simguest import Simulator


class Bytes(asyncio.Protocol):
    read_size = 4096  # bytes through data_received, as the guest channels take them

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = 0

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost += 1


def attach(io: guestio.GuestIO, n: int) -> list[tuple[socket.socket, Bytes]]:
    """n connected pairs: the agent's end served by `io`, the guest's end returned."""
    out = []
    for _ in range(n):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        p = Bytes()
        t = guestio.GuestTransport(io, ours, p)  # type: ignore[arg-type]
        p.connection_made(t)
        t._watch()
        out.append((theirs, p))
    return out


async def test_sockets_readable_while_a_batch_gathers_are_read_in_its_one_pass() -> None:
    io = guestio.GuestIO(asyncio.get_running_loop(), read_delay=0.5)
    pairs = attach(io, 3)
    try:
        first, rest = pairs[0], pairs[1:]
        first[0].sendall(b"a\n")
        await until(lambda: io.gathering)
        assert first[1].data == b""  # waiting for the batch, not read yet
        passes = io.counters["passes"]
        for guest, _ in rest:
            guest.sendall(b"b\n")
        await until(lambda: all(p.data for _, p in pairs))
        assert io.counters["passes"] == passes + 1
        assert [bytes(p.data) for _, p in pairs] == [b"a\n", b"b\n", b"b\n"]
        assert not io.gathering
        # the gate is open again: later input wakes the loop for another batch
        for i, (guest, _) in enumerate(pairs):
            guest.sendall(b"c%d\n" % i)
        await until(lambda: all(len(p.data) == 5 for _, p in pairs))
        assert [bytes(p.data[-3:]) for _, p in pairs] == [b"c0\n", b"c1\n", b"c2\n"]
    finally:
        io.close()
        for guest, _ in pairs:
            guest.close()


async def test_without_a_delay_each_socket_is_read_as_soon_as_it_is_readable() -> None:
    io = guestio.GuestIO(asyncio.get_running_loop())
    [(guest, p)] = attach(io, 1)
    try:
        guest.sendall(b"a\n")
        await until(lambda: p.data == b"a\n")
        assert not io.gathering
    finally:
        io.close()
        guest.close()


async def test_a_flooding_guest_gets_one_read_per_batch_like_its_neighbours() -> None:
    io = guestio.GuestIO(asyncio.get_running_loop(), read_delay=0.005)
    (flood, fp), (quiet, qp) = attach(io, 2)
    try:
        flood.setblocking(False)
        chunk = b"x" * 65536
        for _ in range(16):  # a full socket buffer, and more waiting behind it
            try:
                flood.send(chunk)
            except BlockingIOError:
                break
        quiet.sendall(b"hello\n")
        await until(lambda: qp.data == b"hello\n")
        passes = io.counters["passes"]
        # each pass reads at most read_size bytes of the flooder
        assert len(fp.data) <= passes * Bytes.read_size
    finally:
        io.close()
        flood.close()
        quiet.close()


async def test_closing_while_a_batch_gathers_leaves_no_pass_behind() -> None:
    io = guestio.GuestIO(asyncio.get_running_loop(), read_delay=0.05)
    [(guest, p)] = attach(io, 1)
    guest.sendall(b"a\n")
    await until(lambda: io.gathering)
    passes = io.counters["passes"]
    io.close()
    assert not io.gathering
    await asyncio.sleep(0.1)  # past the batch's time: its pass must not run on a closed epoll
    assert io.counters["passes"] == passes
    assert p.data == b""
    await until(lambda: p.lost == 1)
    guest.close()


@pytest.mark.parametrize("ms", [0.0, 2.5])
async def test_the_agent_reads_its_guests_with_the_configured_batch(sock_dir: Path,
                                                                    ms: float) -> None:
    sim = Simulator(sock_dir, 3, "normal", 100)
    await sim.start()
    conf = cfg.ConfigOpts()
    nfvha_conf.register(conf)
    conf([], default_config_files=[])
    conf.set_override("host", "cmp-batch")
    conf.set_override("spool_dir", "", "heartbeat")
    conf.set_override("read_batch_ms", ms, "heartbeat")
    stack = await start_stack(conf, controller=False, compute=True,
                              transport_url="inproc://", instances_dir=str(sock_dir))
    try:
        io = guestio.for_loop()
        assert io.read_delay == ms / 1000.0
        sessions = stack.compute.sessions
        await until(lambda: len(sessions) == 3 and all(
            s.state.phase == "enabled" and len(s.rtt_ms) >= 10 for s in sessions.values()), 30)
    finally:
        await stack.stop()
        await sim.stop()
