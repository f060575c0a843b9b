"""Channels found by name in a directory: QEMU chardev sockets
``cgcs.heartbeat.<uuid>.sock`` and ``cgcs.messaging.<name>.sock``.

Polled (compute/discovery.py, every ``scan_interval_s``): a socket that
appears, or is replaced by a new one (another inode: QEMU restarted), is
offered to the pool; one that vanishes is withdrawn without a reason (the
pool forgets it once its connection, if any, closes). A directory says
nothing about why a channel went, so a loss stays ``channel_lost``, and it
cannot act on a VM.

A directory whose entries did not change is not read: every scan stats the
directory, and reads it only if its mtime (or inode) moved since the last
read, if that mtime was still recent then (a change within the same tick of
the file system's clock leaves the mtime as it was: trusted only once it is
``SETTLE_S`` old), or if ``FULL_EVERY_S`` passed. A thousand sockets cost a
few ms per read; at five scans a second that was 2-4 % of a core and, worse,
a few ms of the event loop held from every guest's challenge.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path

from nfvha.compute import discovery
from nfvha.compute.pool import HEARTBEAT, MESSAGING, ChannelPool, ChannelSpec
from nfvha.compute.sources import CHANNEL_LOST, LossVerdict

LOG = logging.getLogger(__name__)

HEARTBEAT_PATTERN = r"cgcs\.heartbeat\.(?P<uuid>[0-9a-fA-F-]{36})\.sock$"
MESSAGING_PATTERN = r"cgcs\.messaging\.(?P<name>[^/]+)\.sock$"
SETTLE_S = 2.0  # an mtime this old cannot be the mtime of a change still to come
FULL_EVERY_S = 10.0  # read the directory at least this often whatever its mtime says


class DirectorySource:
    name = "directory"
    can_recover = False  # no hypervisor to act through

    def __init__(self, directory: Path, heartbeat_pattern: str = HEARTBEAT_PATTERN,
                 messaging_pattern: str | None = MESSAGING_PATTERN, *,
                 scan_interval_s: float = 0.2) -> None:
        """`messaging_pattern` None: server-group messaging sockets are not looked for."""
        self.directory = Path(directory)
        self.heartbeat_pattern = re.compile(heartbeat_pattern)
        self.messaging_pattern = re.compile(messaging_pattern) if messaging_pattern else None
        self.scan_interval_s = scan_interval_s
        self._pool: ChannelPool | None = None
        self._found: dict[str, dict[str, discovery.Found]] = {HEARTBEAT: {}, MESSAGING: {}}
        self._task: asyncio.Task[None] | None = None
        # the directory as of the last read: (st_ino, st_mtime_ns) when that
        # mtime was settled (SETTLE_S old), else None (read every time)
        self._settled: tuple[int, int] | None = None
        self._read_at = float("-inf")  # time.monotonic() of the last read
        self.counters = {"scans": 0, "reads": 0}

    async def start(self, pool: ChannelPool) -> None:
        self._pool = pool
        self.scan()
        self._task = asyncio.get_running_loop().create_task(self._scan_loop(),
                                                            name="compute-scan")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def explain_loss(self, uuid: str) -> LossVerdict:
        return LossVerdict(CHANNEL_LOST, "the instances directory cannot tell why")

    async def recover(self, uuid: str, action: str) -> tuple[bool, str]:
        return False, "no libvirt on this host"

    # -- scanning ----------------------------------------------------------------------
    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval_s)
            try:
                self.scan()
            except Exception:
                LOG.exception("scanning %s failed", self.directory)

    def scan(self, force: bool = False) -> None:
        """One look at the directory: offers what is new or replaced,
        withdraws what vanished (read only if it may have changed, or `force`)."""
        self.counters["scans"] += 1
        mono = time.monotonic()
        try:
            st = os.stat(self.directory)
            sig: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
            settled = time.time_ns() - st.st_mtime_ns >= SETTLE_S * 1e9
        except OSError:  # missing (yet): read, which finds nothing
            sig, settled = None, False
        if not force and sig is not None and sig == self._settled \
                and mono - self._read_at < FULL_EVERY_S:
            return
        self.counters["reads"] += 1
        self._read_at = mono
        self._settled = sig if settled else None
        self._scan(HEARTBEAT, self.heartbeat_pattern, "uuid", True)
        if self.messaging_pattern is not None:
            self._scan(MESSAGING, self.messaging_pattern, "name", False)

    def _scan(self, kind: str, pattern: re.Pattern[str], key_group: str, lower: bool) -> None:
        pool = self._pool
        assert pool is not None
        before = self._found[kind]
        found = discovery.scan(self.directory, pattern, before, key_group=key_group,
                               lower=lower)
        self._found[kind] = found
        for key, item in found.items():
            old = before.get(key)
            if old is None or old.inode != item.inode or old.path != item.path:
                pool.offer(ChannelSpec(kind, key, item.path, item.inode))
        for key in before.keys() - found.keys():
            pool.withdraw(kind, key)
