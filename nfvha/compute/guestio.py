"""One epoll for every guest socket of an event loop.

A thousand guests at 100 ms make about ten thousand reads and ten thousand
writes a second. asyncio's selector transports pay, per read, a selector
key lookup, a ``Handle`` queued and run by the loop and three layers of
transport methods; here the loop holds one reader, the fd of our own epoll,
and when any guest socket is readable one pass reads every ready socket
(level-triggered: at most one read per socket per pass, as asyncio does, so
a flooding guest gets no more than its neighbours). Writes go straight to
the socket; what the kernel does not take is buffered and flushed when the
socket is writable again.

With ``read_delay`` set, input is read in batches: when a guest socket
becomes readable the pass waits that long, so every socket that became
readable meanwhile is read in the same pass (at 1000 guests about 20 a pass
instead of 3, a fifth less of the agent's CPU, for at most ``read_delay``
more on a round trip). While a batch gathers the loop does not watch the
guest sockets: it watches a gate, a second epoll holding only ours, closed
and reopened with one ``epoll_ctl`` each (``remove_reader``/``add_reader``
of our epoll instead doubled the agent's kernel time: re-adding an epoll to
another makes the kernel check the nesting).

When the loop's C engine serves steady heartbeat sessions
(compute/steadyloop.py, ``engine``), the pass is the engine's: it reads its
own sessions' sockets and takes their expected answers in C, and returns
every other event, with the bytes it read for a session it hands back, to
be served here as usual.

``GuestTransport`` keeps the part of ``asyncio.Transport``'s contract the
guest channels rely on: ``connection_made`` before any data, at most one
``connection_lost`` and never from inside a ``write`` or ``abort`` (it is
scheduled with ``call_soon``), ``pause_writing``/``resume_writing`` around
the write buffer's high and low water marks, ``eof_received`` returning
falsy closes, ``pause_reading``/``resume_reading``. A ``BufferedProtocol``
gets ``get_buffer``/``buffer_updated``; one with a ``read_size`` attribute
gets reads of at most that many bytes through ``data_received``. Linux only (epoll), as
QEMU's virtio-serial chardevs are.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import select
import socket
import weakref
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_HUP = select.EPOLLHUP | select.EPOLLERR
_READABLE = select.EPOLLIN | _HUP
_WOULD_BLOCK = (BlockingIOError, InterruptedError)
DEFAULT_HIGH_WATER = 64 * 1024


class GuestTransport(asyncio.Transport):
    """A connected stream socket served by the loop's ``GuestIO``."""

    def __init__(self, io: GuestIO, sock: socket.socket,
                 protocol: asyncio.BufferedProtocol) -> None:
        super().__init__()
        self._io = io
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        # a protocol that names its read size takes bytes (data_received):
        # one object per read instead of a buffer, a view and a copy
        self._read_size: int = getattr(protocol, "read_size", 0)
        self._reading = True
        self._closing = False  # close() or abort() called, or the connection failed
        self._lost = False  # connection_lost scheduled
        self._wbuf = bytearray()
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_HIGH_WATER // 4
        self._protocol_paused = False
        self._mask = 0  # what the epoll watches for this fd (0: not registered)

    # -- asyncio.Transport ---------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "peername":
            try:
                return self._sock.getpeername()
            except OSError:
                return default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._watch()

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._watch()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_pause()

    def get_write_buffer_size(self) -> int:
        return len(self._wbuf)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        if self._closing:
            return  # asyncio too drops writes after close (with a warning)
        if not self._wbuf:
            try:
                n = self._sock.send(data)
            except _WOULD_BLOCK:
                n = 0
            except OSError as exc:
                self._fail(exc)
                return
            if n == len(data):
                return
            self._wbuf += memoryview(data)[n:]
            self._watch()
        else:
            self._wbuf += data
        self._check_pause()

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Stop reading; close once the write buffer is flushed."""
        if self._closing:
            return
        self._closing = True
        self._reading = False
        if self._wbuf:
            self._watch()
        else:
            self._lose(None)

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._wbuf.clear()
        self._lose(None)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- driven by GuestIO ---------------------------------------------------------
    def _read_ready(self) -> None:
        if not self._reading or self._closing:
            return
        protocol = self._protocol
        size = self._read_size
        try:
            if size:
                data = self._sock.recv(size)
                n = len(data)
            else:
                n = self._sock.recv_into(protocol.get_buffer(-1))
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self._fail(exc)
            return
        if n:
            if size:
                protocol.data_received(data)  # type: ignore[attr-defined]
            else:
                protocol.buffer_updated(n)
            return
        self._eof()

    def feed_read(self, data: bytes) -> None:
        """What a read by the steady engine gave (b"": end of stream)."""
        if data:
            self._protocol.data_received(data)  # type: ignore[attr-defined]
        else:
            self._eof()

    def _eof(self) -> None:
        # end of stream: the protocol keeps a half-open connection only if it says so
        keep = self._protocol.eof_received()
        if keep:
            self.pause_reading()
        else:
            self.close()

    def _write_ready(self) -> None:
        buf = self._wbuf
        if buf:
            try:
                n = self._sock.send(buf)
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                self._fail(exc)
                return
            del buf[:n]
        if buf:
            self._check_pause()
            return
        self._watch()
        self._check_pause()
        if self._closing:
            self._lose(None)

    # -- internals -----------------------------------------------------------------
    def _check_pause(self) -> None:
        size = len(self._wbuf)
        if not self._protocol_paused and size > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()
        elif self._protocol_paused and size <= self._low:
            self._protocol_paused = False
            self._protocol.resume_writing()

    def _watch(self) -> None:
        # An fd registered with no events would still report HUP (level-
        # triggered: every pass) while reading is paused: unregister it instead.
        mask = (_IN if self._reading and not self._closing else 0) | (_OUT if self._wbuf else 0)
        if not self._lost:
            self._io._set_mask(self, mask)

    def _fail(self, exc: OSError) -> None:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
            LOG.debug("guest socket %d: %s", self._fd, exc)
        self._closing = True
        self._wbuf.clear()
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._reading = False
        self._io._set_mask(self, 0)
        self._io._loop_call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()


class GuestIO:
    """The epoll of one event loop's guest sockets (``for_loop``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_delay: float = 0.0) -> None:
        self._loop = weakref.ref(loop)  # for_loop's table keys on the loop
        self._epoll = select.epoll()
        self._gate = select.epoll()  # the loop's reader: holds only _epoll
        self._gate.register(self._epoll.fileno(), _IN)
        self._by_fd: dict[int, GuestTransport] = {}
        self._registered = False  # the gate's fd is a reader of the loop
        # seconds a pass waits after the first readable socket (0: none)
        self.read_delay = read_delay
        self._batch: asyncio.TimerHandle | None = None  # a pass waiting for its batch
        # the C engine of the loop's steady heartbeat sessions (compute/steadyloop.py):
        # when it serves any, it polls and reads their sockets itself
        self.engine: Any = None
        self.counters = {"passes": 0, "events": 0}

    def __len__(self) -> int:
        return len(self._by_fd)

    def _loop_call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            loop.call_soon(callback, *args)
        else:
            callback(*args)

    def _set_mask(self, t: GuestTransport, mask: int) -> None:
        fd = t._fd
        if mask == t._mask:
            return
        if t._mask == 0:
            self._epoll.register(fd, mask)
            self._by_fd[fd] = t
            if not self._registered:
                loop = self._loop()
                if loop is None:
                    return
                loop.add_reader(self._gate.fileno(), self._ready)
                self._registered = True
        elif mask == 0:
            self._epoll.unregister(fd)
            del self._by_fd[fd]
        else:
            self._epoll.modify(fd, mask)
        t._mask = mask

    @property
    def gathering(self) -> bool:
        """A pass is waiting for its batch (the loop is not watching the sockets)."""
        return self._batch is not None

    def _ready(self) -> None:
        if self._batch is not None:  # already gathering
            return
        delay = self.read_delay
        loop = self._loop()
        if delay <= 0 or loop is None:
            self._poll()
            return
        self._gate.modify(self._epoll.fileno(), 0)
        self._batch = loop.call_later(delay, self._batched)

    def _batched(self) -> None:
        self._batch = None
        try:
            self._poll()
        finally:
            # level-triggered: sockets still readable wake the loop again at once
            self._gate.modify(self._epoll.fileno(), _IN)

    def _poll(self) -> None:
        engine = self.engine
        if engine is not None and len(engine):
            self._poll_engine(engine)
            return
        by_fd = self._by_fd
        events = self._epoll.poll(0)
        self.counters["passes"] += 1
        self.counters["events"] += len(events)
        for fd, ev in events:
            t = by_fd.get(fd)
            if t is None:  # closed earlier in this pass
                continue
            self._serve(t, fd, ev)

    def _poll_engine(self, engine: Any) -> None:
        # The engine reads its sessions' sockets and takes their answers; what
        # it hands back (a session it met something else for) is first given
        # back to its Python side, then every other event is served as usual.
        handed, events = engine.poll(self._epoll.fileno(), len(self._by_fd) + 1)
        self.counters["passes"] += 1
        self.counters["events"] += len(events)
        for session in handed:
            try:
                session.off_engine()
            except Exception:
                LOG.exception("handing session %r back from the engine", session)
        by_fd = self._by_fd
        for fd, ev, data in events:
            t = by_fd.get(fd)
            if t is None:
                continue
            if data is None:
                self._serve(t, fd, ev)
                continue
            try:
                t.feed_read(data)  # the engine read it already
            except Exception:
                LOG.exception("guest socket %d: error while serving it", fd)
                t.abort()

    def _serve(self, t: GuestTransport, fd: int, ev: int) -> None:
        try:
            if ev & _READABLE and t._reading:
                t._read_ready()
            # a hang-up while reading is paused surfaces through the write
            # (registered and not reading means output is pending)
            if t._mask & _OUT and ev & (_OUT | _HUP):
                t._write_ready()
        except Exception:  # one guest's failure is its own
            LOG.exception("guest socket %d: error while serving it", fd)
            t.abort()

    def close(self) -> None:
        loop = self._loop()
        if self._registered and loop is not None and not loop.is_closed():
            loop.remove_reader(self._gate.fileno())
        self._registered = False
        if self._batch is not None:
            self._batch.cancel()
            self._batch = None
        for t in list(self._by_fd.values()):
            t.abort()
        self._epoll.close()
        self._gate.close()


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GuestIO] = \
    weakref.WeakKeyDictionary()


def for_loop(loop: asyncio.AbstractEventLoop | None = None) -> GuestIO:
    """The one ``GuestIO`` of ``loop`` (default: the running loop)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    io = _PER_LOOP.get(loop)
    if io is None:
        io = _PER_LOOP[loop] = GuestIO(loop)
    return io


async def connect_unix(protocol_factory: Callable[[], asyncio.BufferedProtocol],
                       path: str) -> tuple[GuestTransport, asyncio.BufferedProtocol]:
    """``loop.create_unix_connection`` for a guest channel, served by the loop's epoll."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, path)
    except BaseException:
        sock.close()
        raise
    try:
        protocol = protocol_factory()
        transport = GuestTransport(for_loop(loop), sock, protocol)
        protocol.connection_made(transport)
    except BaseException:
        sock.close()
        raise
    transport._watch()
    return transport, protocol
