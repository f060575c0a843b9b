"""The guest end of the virtio-serial port: open it raw and non-blocking, write without blocking.

With no host process connected, a virtio-serial read returns EOF (hang-up)
and a blocking write would wait until a host connects (INTERFACES.md §1),
so every write here is non-blocking and queued. The queue is small and
bounded: when the host is absent, a stale challenge response is worth
nothing, so a newer one replaces it. Standard library only, Python 3.8.
"""
from __future__ import annotations

import errno
import os
import termios
import tty
from collections import deque
from typing import Deque, Tuple

MAX_QUEUED = 32


def open_device(path: str) -> int:
    """O_RDWR|O_NONBLOCK|O_NOCTTY; a tty (a pty stand-in, a serial console) goes raw."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if os.isatty(fd):
            # Raw: no echo, no CR/LF translation, no line buffering, no signals.
            tty.setraw(fd, termios.TCSANOW)
            attrs = termios.tcgetattr(fd)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except BaseException:
        os.close(fd)
        raise
    return fd


class WriteQueue:
    """Messages waiting for the channel to accept them (never blocks)."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.max_queued = max_queued
        self._items: Deque[Tuple[str, bytes]] = deque()
        self._offset = 0  # bytes of the first item already written
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, kind: str, data: bytes) -> None:
        if kind == "challenge_response":
            # Only the newest answer can still satisfy the host; drop older unsent ones.
            kept = [(k, d) for i, (k, d) in enumerate(self._items)
                    if k != kind or (i == 0 and self._offset)]
            self.dropped += len(self._items) - len(kept)
            self._items = deque(kept)
        self._items.append((kind, data))
        while len(self._items) > self.max_queued:
            if self._offset and len(self._items) > 1:  # keep a half-written message whole
                self._items.rotate(-1)
                self._items.popleft()
                self._items.rotate(1)
            else:
                self._items.popleft()
                self._offset = 0
            self.dropped += 1

    def clear(self) -> None:
        self._items.clear()
        self._offset = 0

    def flush(self, fd: int) -> bool:
        """Writes what the channel accepts now. True when empty; raises OSError on a
        hard error (EIO, EPIPE: the host is gone)."""
        while self._items:
            kind, data = self._items[0]
            try:
                n = os.write(fd, data[self._offset:])
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return False
                raise
            self._offset += n
            if self._offset >= len(data):
                self._items.popleft()
                self._offset = 0
        return True
