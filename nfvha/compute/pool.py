"""The compute agent's one pool of guest channels, fed by an instance source.

A source (compute/sources/) says which channels exist: ``offer(spec)`` for
a channel that appeared or changed (QEMU made a new socket), ``withdraw``
for one that is gone. The pool is the one place that

- makes the sessions: ``InstanceSession`` for a heartbeat channel,
  ``MessagingSession`` for a server-group one, each with the callbacks it
  reports to (given to the pool when it is made, so no session knows the
  agent);
- connects to QEMU's chardev socket (QEMU listens, we connect), backs off
  while it refuses (``min(reconnect_max_s, 0.05 * 2**failures)``), connects
  again at once when QEMU closes the connection or the socket's inode
  changes;
- forgets a withdrawn channel: at once when it is not connected, else when
  its connection closes (a VM still running on an unlinked socket keeps its
  heartbeat until then).

``withdraw(..., reason)`` first feeds the heartbeat session
``host.Standby(reason)``: the host knows why the channel goes (the domain
stops, nfvha resets it), so the closing that follows is no fault.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from nfvha.compute import guestio
from nfvha.compute.channel import GuestChannel
from nfvha.compute.messaging import MessagingHooks, MessagingSession
from nfvha.compute.session import HeartbeatHooks, InstanceSession
from nfvha.protocol import sgsession
from nfvha.protocol.host import HostConfig

LOG = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"
MESSAGING = "messaging"
KINDS = (HEARTBEAT, MESSAGING)


@dataclass(frozen=True)
class ChannelSpec:
    kind: str                # "heartbeat" | "messaging"
    key: str                 # heartbeat: instance uuid (lower case); messaging: instance name
    path: str                # QEMU's chardev UNIX socket
    inode: int = 0           # another inode: QEMU made a new socket, reconnect now
    uuid: str | None = None  # messaging: the VM's uuid when the source knows it


def backoff_s(failures: int, reconnect_max_s: float) -> float:
    return min(reconnect_max_s, 0.05 * 2 ** min(failures, 10))


class ChannelPool:
    """Every guest channel of one compute agent, by kind and key.

    ``heartbeat`` and ``messaging`` are the live dicts of sessions (the
    agent's ``sessions`` is ``heartbeat``). Sessions offered before
    ``start()`` are made but connected only then (the agent says hello with
    them first)."""

    def __init__(self, *, host_config: HostConfig = HostConfig(), rate_limit_per_s: int = 50,
                 heartbeat_hooks: HeartbeatHooks | None = None,
                 single_port: sgsession.SessionConfig | None = None,
                 reconnect_max_s: float = 2.0,
                 on_change: Callable[[str, str, bool], None] | None = None,
                 report_fault: Callable[[str, str, str], object] | None = None) -> None:
        self.host_config = host_config
        self.rate_limit_per_s = rate_limit_per_s
        self.heartbeat_hooks = heartbeat_hooks or HeartbeatHooks()
        self.single_port = single_port  # heartbeat sessions carry server-group traffic too
        self.reconnect_max_s = reconnect_max_s
        self._on_change = on_change
        self._report_fault = report_fault
        self.heartbeat: dict[str, InstanceSession] = {}
        self.messaging: dict[str, MessagingSession] = {}
        self._messaging_hooks: MessagingHooks | None = None
        self._messaging_config = sgsession.SessionConfig(instance="")
        self._running = False
        self._connects: dict[GuestChannel, asyncio.Task[None]] = {}
        self._sleeping: set[GuestChannel] = set()  # connects waiting out their backoff
        self.counters = {"offered": 0, "withdrawn": 0, "forgotten": 0, "connect_failures": 0}

    def serve_messaging(self, hooks: MessagingHooks,
                        config: sgsession.SessionConfig | None = None) -> None:
        """Also take server-group messaging channels (off until called:
        offers of that kind are ignored)."""
        self._messaging_hooks = hooks
        self._messaging_config = config or sgsession.SessionConfig(instance="")

    @property
    def running(self) -> bool:
        return self._running

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        for sessions in (self.heartbeat, self.messaging):
            for s in list(sessions.values()):
                self._connect_soon(s, 0.0)

    async def stop(self) -> None:
        """Stops connecting and closes every session without a report."""
        self._running = False
        tasks = list(self._connects.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for sessions in (self.messaging, self.heartbeat):
            for s in sessions.values():
                s.close()

    # -- what sources call ------------------------------------------------------------
    def offer(self, spec: ChannelSpec) -> None:
        """A channel that exists: made (and connected) if new, reconnected at
        once if QEMU made a new socket for it."""
        sessions = self._sessions(spec.kind)
        if sessions is None:
            LOG.debug("channel %s %s not served here", spec.kind, spec.key)
            return
        key = _key(spec.kind, spec.key)
        s = sessions.get(key)
        self.counters["offered"] += 1
        if s is None:
            s = self._make(spec, key)
            s.inode = spec.inode
            sessions[key] = s
            LOG.info("instance %s: %s channel %s found", key, spec.kind, spec.path)
            self._changed(spec.kind, key, True)
            if self._running:
                self._connect_soon(s, 0.0)
            return
        s.withdrawn = False
        if isinstance(s, MessagingSession) and spec.uuid is not None:
            s.known_uuid = spec.uuid.lower()
        if s.inode != spec.inode or s.path != spec.path:
            # QEMU made a new socket: connect now rather than after the backoff.
            s.inode, s.path, s.connect_failures = spec.inode, spec.path, 0
            if s.transport is None and self._running:
                if s in self._sleeping:  # waiting out a backoff: cancel it, connect now
                    self._sleeping.discard(s)
                    task = self._connects.pop(s, None)
                    if task is not None:
                        task.cancel()
                    s.connecting = False
                self._connect_soon(s, 0.0)

    def withdraw(self, kind: str, key: str, reason: str | None = None) -> None:
        """The channel is gone (socket removed, domain stopped, detached).
        With a reason, the heartbeat session is told first (Standby): the
        loss that follows is no fault."""
        sessions = self._sessions(kind)
        if sessions is None:
            return
        s = sessions.get(_key(kind, key))
        if s is None:
            return
        if not s.withdrawn:
            self.counters["withdrawn"] += 1
        s.withdrawn = True
        if reason and isinstance(s, InstanceSession):
            s.standby(reason)
        if s in self._sleeping:  # not connected, only waiting to retry: nothing to wait for
            task = self._connects.pop(s, None)
            if task is not None:
                task.cancel()
            self._forget(s)
        elif s.transport is None and not s.connecting:
            self._forget(s)
        # else: still connected (through the unlinked socket): forgotten on close

    def standby(self, uuid: str, reason: str) -> None:
        """For a source: the VM stays but will be silent for a reason the host
        knows (paused by its owner, migrating): its heartbeat session stands
        by (no fault); the guest's next registration enables it again."""
        s = self.heartbeat.get(_key(HEARTBEAT, uuid))
        if s is not None:
            s.standby(reason)

    def report_fault(self, uuid: str, kind: str, detail: str) -> None:
        """For a source: a fault no channel reported (a domain crashed whose
        guest never registered or had already stopped heartbeating)."""
        if self._report_fault is None:
            LOG.warning("instance %s: fault %s (%s) has nowhere to go", uuid, kind, detail)
            return
        self._report_fault(uuid, kind, detail)

    # -- sessions --------------------------------------------------------------------
    def _sessions(self, kind: str) -> dict[str, InstanceSession] | dict[str, MessagingSession] \
            | None:
        if kind == HEARTBEAT:
            return self.heartbeat
        if kind == MESSAGING and self._messaging_hooks is not None:
            return self.messaging
        return None

    def _make(self, spec: ChannelSpec, key: str) -> InstanceSession | MessagingSession:
        if spec.kind == HEARTBEAT:
            return InstanceSession(key, spec.path, self.host_config, self.rate_limit_per_s,
                                   hooks=self.heartbeat_hooks, on_closed=self._closed,
                                   single_port=self.single_port)
        assert self._messaging_hooks is not None
        s = MessagingSession(key, spec.path, replace(self._messaging_config, instance=key),
                             hooks=self._messaging_hooks, on_closed=self._closed)
        s.known_uuid = spec.uuid.lower() if spec.uuid else None
        return s

    def _kind_of(self, s: GuestChannel) -> tuple[str, str]:
        if isinstance(s, InstanceSession):
            return HEARTBEAT, s.uuid
        assert isinstance(s, MessagingSession)
        return MESSAGING, s.name

    def _forget(self, s: GuestChannel) -> None:
        kind, key = self._kind_of(s)
        sessions = self._sessions(kind)
        LOG.info("instance %s: %s channel %s gone", key, kind, s.path)
        s.close()
        self._sleeping.discard(s)
        self._connects.pop(s, None)
        if sessions is not None and sessions.get(key) is s:
            del sessions[key]
            self.counters["forgotten"] += 1
            self._changed(kind, key, False)

    def _changed(self, kind: str, key: str, present: bool) -> None:
        if self._on_change is not None:
            try:
                self._on_change(kind, key, present)
            except Exception:
                LOG.exception("channel change of %s %s not handled", kind, key)

    # -- connections -----------------------------------------------------------------
    def _connect_soon(self, s: GuestChannel, delay: float) -> None:
        if s.connecting or s.transport is not None or s.closing:
            return
        s.connecting = True
        task = asyncio.get_running_loop().create_task(self._connect(s, delay))
        self._connects[s] = task
        task.add_done_callback(lambda t, s=s: self._connects.pop(s, None)
                               if self._connects.get(s) is t else None)

    async def _connect(self, s: GuestChannel, delay: float) -> None:
        try:
            if delay > 0:
                self._sleeping.add(s)
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._sleeping.discard(s)
            if s.closing or not self._running:
                s.connecting = False
                return
            await guestio.connect_unix(lambda: s, s.path)
        except asyncio.CancelledError:
            # stopping, or replaced by a connect made at once (new socket):
            # only the current attempt speaks for the session
            if self._connects.get(s) is asyncio.current_task():
                s.connecting = False
            raise
        except OSError as exc:
            s.connecting = False
            s.connect_failures += 1
            self.counters["connect_failures"] += 1
            if s.withdrawn:
                self._forget(s)
                return
            backoff = backoff_s(s.connect_failures, self.reconnect_max_s)
            if s.connect_failures in (1, 10) or s.connect_failures % 100 == 0:
                LOG.info("%s: connect %s failed (%s); retry in %.2fs",
                         s.label, s.path, exc, backoff)
            self._connect_soon(s, backoff)

    def _closed(self, s: GuestChannel) -> None:
        if not self._running or s.closing:
            return
        if s.withdrawn:
            self._forget(s)
            return
        # QEMU closed our connection: try again at once (it may still listen).
        self._connect_soon(s, 0.0)


def _key(kind: str, key: str) -> str:
    return key.lower() if kind == HEARTBEAT else key
