"""The guest end of the virtio-serial port: open it raw and non-blocking, write without blocking.

With no host process connected, a virtio-serial read returns EOF (hang-up)
and a blocking write would wait until a host connects (docs/protocol.md, "The channel"),
so every write here is non-blocking and queued. The queue is small and
bounded: when the host is absent, a stale challenge response is worth
nothing, so a newer one replaces it.

A port may be missing when the agent starts and appear later (hot-plugged by
the host), or go away (hot-unplugged); a guest without udev has no
/dev/virtio-ports/NAME link for it at all. ``PortLocator`` finds the port by
its name in sysfs then. Standard library only, Python 3.8.
"""
from __future__ import annotations

import errno
import os
import stat
import termios
import tty
from collections import deque
from typing import Deque, Optional, Tuple

MAX_QUEUED = 32
# open() errors that mean "the port is not there (now)", not "something is wrong"
ABSENT_ERRNOS = (errno.ENOENT, errno.ENODEV, errno.ENXIO)


class PortLocator:
    """Where the port ``path`` names is now, or None while it is not there.

    For ``.../virtio-ports/NAME`` (udev's link): the link when it exists and
    its node still carries NAME in sysfs, else the ``/dev/vportNpM`` whose
    ``/sys/class/virtio-ports/vportNpM/name`` is NAME (no udev, a hot-plugged
    port, or a stale link to a node a re-plugged port took over). Any other
    path (a pty stand-in, ``/dev/vport0p1`` given directly) is taken as is.
    """

    def __init__(self, path: str, sys_root: str = "/sys", dev_root: str = "/dev") -> None:
        self.path = path
        parent, name = os.path.split(path)
        self.name: Optional[str] = name if os.path.basename(parent) == "virtio-ports" else None
        self.ports_dir = os.path.join(sys_root, "class", "virtio-ports")
        self.dev_root = dev_root

    def locate(self) -> Optional[str]:
        """The path to open, or None when the port is surely not there."""
        if self.name is None:
            return self.path  # open() tells: ENOENT is "not there"
        try:
            # The link's own target (udev: ../vport0p1), not the end of the chain.
            node = os.readlink(self.path) if os.path.islink(self.path) else self.path
            present = _is_chardev(self.path)
        except OSError:  # removed while we looked
            present = False
        if present:
            named = self._name_of(os.path.basename(node))
            if named is None or named == self.name:
                return self.path
        return self._by_name()

    def _name_of(self, node: str) -> Optional[str]:
        try:
            with open(os.path.join(self.ports_dir, node, "name"), "rb") as f:
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return None

    def _by_name(self) -> Optional[str]:
        try:
            nodes = sorted(os.listdir(self.ports_dir))
        except OSError:  # no virtio_console driver (yet), or not a Linux guest
            return None
        for node in nodes:
            if self._name_of(node) == self.name:
                dev = os.path.join(self.dev_root, node)
                if _is_chardev(dev):
                    return dev
        return None


def _is_chardev(path: str) -> bool:
    # A port is a character device; a plain file of its name (a stray shell
    # redirection made it) is not one to talk to.
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


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
