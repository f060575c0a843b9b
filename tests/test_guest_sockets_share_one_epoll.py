"""compute/guestio.py: every guest socket of a loop on one epoll, with the
asyncio transport contract the guest channels rely on — over real UNIX
sockets: data in order, writes the kernel does not take are buffered and
flushed (pause_writing / resume_writing around the water marks), EOF and a
reset peer end in one connection_lost scheduled outside the call that saw
it, paused reading neither reads nor spins on a hang-up, one protocol's
exception costs only its own connection, and a closed socket's number can
serve a new connection at once."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from conftest import until

from nfvha.compute import guestio


class Recorder(asyncio.BufferedProtocol):
    def __init__(self, explode_on: bytes | None = None) -> None:
        self.transport: guestio.GuestTransport | None = None
        self.data = bytearray()
        self.lost: list[Exception | None] = []
        self.pauses: list[str] = []
        self.eof = 0
        self.explode_on = explode_on
        self.in_call = False
        self.lost_inside_call = False
        self._buf = bytearray(4096)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, guestio.GuestTransport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        chunk = bytes(self._buf[:nbytes])
        self.data += chunk
        if self.explode_on is not None and self.explode_on in chunk:
            raise RuntimeError("a bug in this protocol")

    def eof_received(self) -> bool:
        self.eof += 1
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_call:
            self.lost_inside_call = True
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.pauses.append("pause")

    def resume_writing(self) -> None:
        self.pauses.append("resume")


class Peer:
    """QEMU's listening end: accepts one connection at a time, as QEMU does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(8)

    def accept(self) -> socket.socket:
        conn, _ = self.srv.accept()
        conn.settimeout(5)
        return conn

    def close(self) -> None:
        self.srv.close()


async def connect(path: Path, **kw: object) -> tuple[guestio.GuestTransport, Recorder]:
    t, p = await guestio.connect_unix(lambda: Recorder(**kw), str(path))  # type: ignore[arg-type]
    assert isinstance(p, Recorder) and p.transport is t
    return t, p


@pytest.fixture
def peer(sock_dir: Path):
    p = Peer(sock_dir / "g.sock")
    yield p
    p.close()


async def test_bytes_flow_both_ways_in_order_over_one_epoll(peer: Peer) -> None:
    t, p = await connect(peer.path)
    conn = peer.accept()
    io = guestio.for_loop()
    assert len(io) >= 1
    for i in range(50):
        conn.sendall(b"m%d\n" % i)
    await until(lambda: p.data.count(b"\n") == 50)
    assert bytes(p.data) == b"".join(b"m%d\n" % i for i in range(50))
    t.write(b"hello ")
    t.write(bytearray(b"guest"))
    assert conn.recv(100) == b"hello guest"
    assert io.counters["passes"] > 0
    t.abort()
    await until(lambda: p.lost == [None])
    conn.close()


async def test_a_guest_that_does_not_read_fills_the_buffer_and_is_paused_then_resumed(
        peer: Peer) -> None:
    t, p = await connect(peer.path)
    conn = peer.accept()
    t.set_write_buffer_limits(high=16 * 1024)
    chunk = b"x" * 8192
    sent = 0
    while "pause" not in p.pauses:  # the kernel's buffer fills first, then ours
        t.write(chunk)
        sent += len(chunk)
        assert sent < 64 * 1024 * 1024, "the socket never pushed back"
    assert t.get_write_buffer_size() > 16 * 1024
    got = 0
    conn.setblocking(False)

    def drain() -> bool:
        nonlocal got
        try:
            while True:
                piece = conn.recv(1 << 16)
                if not piece:
                    break
                got += len(piece)
        except BlockingIOError:
            pass
        return got == sent
    await until(drain, timeout=20)
    assert p.pauses == ["pause", "resume"]
    assert t.get_write_buffer_size() == 0 and p.lost == []
    t.close()
    await until(lambda: p.lost == [None])
    conn.close()


async def test_eof_from_the_guest_side_ends_in_one_connection_lost(peer: Peer) -> None:
    t, p = await connect(peer.path)
    conn = peer.accept()
    conn.sendall(b"last words\n")
    conn.close()  # QEMU closed its end
    await until(lambda: p.lost == [None])
    assert bytes(p.data) == b"last words\n" and p.eof == 1 and t.is_closing()
    t.write(b"into the void")  # dropped, no error
    await asyncio.sleep(0.05)
    assert p.lost == [None]


async def test_a_write_to_a_vanished_peer_fails_without_reentering_the_protocol(
        peer: Peer) -> None:
    t, p = await connect(peer.path)
    conn = peer.accept()
    t.pause_reading()  # only the write can notice
    conn.close()
    p.in_call = True
    for _ in range(100):  # EPIPE or ECONNRESET within a few writes
        t.write(b"x" * 4096)
        if t.is_closing():
            break
    p.in_call = False
    assert t.is_closing()
    assert not p.lost_inside_call  # connection_lost comes from the loop, later
    await until(lambda: len(p.lost) == 1)
    assert isinstance(p.lost[0], OSError)


async def test_paused_reading_reads_nothing_and_does_not_spin_on_a_hangup(peer: Peer) -> None:
    t, p = await connect(peer.path)
    conn = peer.accept()
    io = guestio.for_loop()
    t.pause_reading()
    conn.sendall(b"held back\n")
    conn.close()  # a hang-up while paused: no event may fire for this socket
    passes = io.counters["passes"]
    await asyncio.sleep(0.2)
    assert p.data == b"" and p.lost == []
    assert io.counters["passes"] - passes < 5  # not a busy loop on the HUP
    t.resume_reading()
    await until(lambda: p.lost == [None])
    assert bytes(p.data) == b"held back\n"


async def test_one_protocols_exception_costs_only_its_own_connection(
        sock_dir: Path) -> None:
    peers = [Peer(sock_dir / f"g{i}.sock") for i in range(3)]
    try:
        pairs = []
        for i, pr in enumerate(peers):
            t, p = await connect(pr.path, explode_on=b"boom" if i == 1 else None)
            pairs.append((t, p, pr.accept()))
        for _, _, conn in pairs:
            conn.sendall(b"boom\n")
        await until(lambda: len(pairs[1][1].lost) == 1)
        for t, p, conn in (pairs[0], pairs[2]):
            conn.sendall(b"still here\n")
            await until(lambda p=p: p.data == b"boom\nstill here\n")
            assert p.lost == [] and not t.is_closing()
            t.write(b"ok")
            assert conn.recv(10) == b"ok"
            t.abort()
    finally:
        for pr in peers:
            pr.close()


async def test_a_socket_number_freed_by_one_guest_serves_the_next_at_once(peer: Peer) -> None:
    for round_ in range(5):
        t, p = await connect(peer.path)
        conn = peer.accept()
        conn.sendall(b"round %d\n" % round_)
        await until(lambda p=p, r=round_: p.data == b"round %d\n" % r)
        t.abort()
        await until(lambda p=p: p.lost == [None])
        conn.close()
    assert len(guestio.for_loop()) == 0


async def test_connecting_to_nobody_raises_and_leaks_nothing(sock_dir: Path) -> None:
    with pytest.raises(OSError):
        await guestio.connect_unix(Recorder, str(sock_dir / "nobody.sock"))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_dir / "stale.sock"))
    stale.close()
    with pytest.raises(ConnectionRefusedError):
        await guestio.connect_unix(Recorder, str(sock_dir / "stale.sock"))


class SmallReads(Recorder):
    """A protocol that names its read size gets bytes of at most that many."""

    read_size = 5

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        self.data += data


async def test_a_protocol_naming_its_read_size_gets_bounded_reads_as_bytes(
        peer: Peer) -> None:
    t, p = await guestio.connect_unix(SmallReads, str(peer.path))
    assert isinstance(p, SmallReads)
    conn = peer.accept()
    conn.sendall(b"0123456789abcdefghij\n")
    await until(lambda: bytes(p.data) == b"0123456789abcdefghij\n")
    assert all(type(x) is bytes and 0 < len(x) <= 5 for x in p.pieces)
    assert len(p.pieces) >= 5
    conn.close()
    await until(lambda: p.lost == [None])
