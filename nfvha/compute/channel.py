"""What every guest channel of the compute agent shares (heartbeat and
server-group messaging): an asyncio BufferedProtocol over QEMU's chardev
socket (served by the loop's one epoll of guest sockets, compute/guestio.py)
that reads at most ``read_size`` bytes per loop turn, pauses reading
past a byte budget, drops (and counts) writes to a guest that does not read
past ``write_high_water`` bytes, and never lets an exception leave a
callback: a bug of ours costs one channel, never the agent.

Subclasses parse bytes in ``_on_bytes``, react to ``_on_connected`` and
``connection_lost`` (then call ``_closed()``: whoever made the channel, the
pool, decides whether to reconnect), and name themselves in ``label`` for
the logs.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from nfvha.compute.ratelimit import ReadThrottle
from nfvha.protocol.framing import encode

LOG = logging.getLogger(__name__)

MIN_READ_CHARGE = 64  # a read costs at least this much budget (byte-at-a-time guests)


class GuestChannel(asyncio.BufferedProtocol):
    label = "guest channel"

    def __init__(self, read_size: int, byte_budget_per_s: int, write_high_water: int,
                 on_closed: Callable[[GuestChannel], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.connecting = False
        self.closing = False  # stopping or forgotten: no more reports
        self.withdrawn = False  # its source no longer offers it: forgotten once closed
        self.connect_failures = 0
        self.inode = 0
        self.path = ""
        self._on_closed = on_closed
        self._buffer = bytearray(read_size)
        self._write_high_water = write_high_water
        self._write_paused = False
        self._reads = ReadThrottle(byte_budget_per_s, time.monotonic(), MIN_READ_CHARGE)
        self.counters = {"bytes_in": 0, "read_pauses": 0, "write_dropped": 0,
                         "internal_errors": 0, "connects": 0, "violations": 0}

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the Transport methods without the base class
        transport = cast(asyncio.Transport, transport)
        self.connecting = False
        if self.closing:  # forgotten or stopping while the connect was under way
            transport.abort()
            return
        self.transport = transport
        self.connect_failures = 0
        self.counters["connects"] += 1
        self._write_paused = False
        transport.set_write_buffer_limits(high=self._write_high_water)
        try:
            self._on_connected()
        except Exception:
            self._internal_error("connecting")

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    @property
    def read_size(self) -> int:
        """The most one read takes: compute/guestio.py then reads into bytes
        of its own and calls data_received (no buffer, no copy)."""
        return len(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(memoryview(self._buffer)[:nbytes]))

    def data_received(self, data: bytes) -> None:
        try:
            nbytes = len(data)
            now = time.monotonic()
            self.counters["bytes_in"] += nbytes
            if self._reads.charge(self.transport, nbytes, now):
                self.counters["read_pauses"] += 1
            self._on_bytes(data, now)
        except Exception:
            self._internal_error("reading")

    def eof_received(self) -> bool:
        return False  # close the transport: QEMU's side went away

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False

    # -- for subclasses ----------------------------------------------------------------
    def _on_connected(self) -> None:
        """The channel is up (a fresh decoder, a Connected event, ...)."""

    def _on_bytes(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def _closed(self) -> None:
        """The connection went away (not by our close()): tell the pool."""
        if self._on_closed is not None and not self.closing:
            self._on_closed(self)

    def _write_raw(self, msg: dict[str, Any]) -> None:
        """One message to the guest, or dropped (and counted) if it does not read."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._write_paused:
            self.counters["write_dropped"] += 1
            return
        self.transport.write(encode(msg))

    def _internal_error(self, where: str, exc: BaseException | None = None) -> None:
        # log, count, and drop the channel so it starts clean; `exc`: raised
        # elsewhere (the steady engine's pass), else the one being handled
        self.counters["internal_errors"] += 1
        LOG.error("%s: internal error while %s", self.label, where,
                  exc_info=exc if exc is not None else True)
        if self.transport is not None:
            self.transport.abort()
