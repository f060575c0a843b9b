"""Server-group messaging channels of the instances on this compute host.

- finds ``cgcs.messaging.<instance-name>.sock`` sockets (QEMU's chardev for
  the guest's ``cgcs.messaging`` virtio-serial port) in the instances
  directory, connects to each, reconnects, forgets sockets that disappear;
- one ``MessagingSession`` per instance drives the sans-I/O host machine
  ``nfvha.protocol.servergroup.session_step``: guest broadcasts and status
  queries go to the controller with ``source_instance`` set here, from the
  socket name — a guest can never choose or spoof it;
- ``deliver(instances, messages)`` writes the controller's app-layer
  messages (broadcasts, notifications, status answers) to local guests.

The guest is untrusted: reads are bounded (READ_SIZE per loop turn, a byte
budget pauses reading), the machine's token buckets limit messages, and a
guest that does not read gets at most WRITE_HIGH_WATER bytes queued, the
rest is dropped and counted — never waited for, so one VM cannot slow the
delivery to the others.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nfvha.compute import discovery, qemu_peer
from nfvha.compute.channel import GuestChannel
from nfvha.compute.ratelimit import Every
from nfvha.protocol import servergroup as sg
from nfvha.protocol.framing import FrameError, LineDecoder

if TYPE_CHECKING:
    from nfvha.compute.agent import ComputeAgent

LOG = logging.getLogger(__name__)

DEFAULT_PATTERN = r"cgcs\.messaging\.(?P<name>[^/]+)\.sock$"
READ_SIZE = 8192
BYTE_BUDGET_PER_S = 256 * 1024  # 40 full-size messages a second and then some
WRITE_HIGH_WATER = 64 * 1024  # ~16 full-size messages waiting for a slow guest
RESYNC_S = 30.0  # instance list re-sent so a restarted controller learns placement


class MessagingSession(GuestChannel):
    """One instance's messaging channel; survives reconnections."""

    def __init__(self, channels: MessagingChannels, name: str, path: str,
                 config: sg.SessionConfig) -> None:
        super().__init__(READ_SIZE, BYTE_BUDGET_PER_S, WRITE_HIGH_WATER)
        self.label = f"instance {name} messaging"
        self.channels = channels
        self.name = name
        self.path = path
        self.state = sg.session(config)
        self.decoder = LineDecoder(sg.MAX_MSG)
        self._log_every = Every(1.0)
        self.counters.update(to_controller=0, delivered=0)
        # the VM's uuid, from the QEMU at the other end (None: not known)
        self.uuid: str | None = None

    # -- asyncio callbacks -------------------------------------------------------------
    def _on_connected(self) -> None:
        self.decoder = LineDecoder(sg.MAX_MSG)
        sock = self.transport.get_extra_info("socket") if self.transport else None
        uuid, _ = qemu_peer.vm_of(sock) if sock is not None else (None, None)
        if uuid != self.uuid:
            self.uuid = uuid
            self.channels._announce()  # the links changed: it sends them

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._reads.cancel()
        if not self.closing:
            self.channels._closed(self)

    # -- input -------------------------------------------------------------------------
    def _on_bytes(self, data: bytes, now: float) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                self._step(sg.Malformed(item.reason), now)
            else:
                self._step(sg.Received(item), now)

    def _step(self, event: Any, now: float) -> None:
        self.state, outputs = sg.session_step(self.state, event, now)
        for out in outputs:
            if isinstance(out, sg.Send):
                self._write_raw(out.msg)
            elif isinstance(out, sg.ToController):
                self.counters["to_controller"] += 1
                self.channels._to_controller(self, out)
            elif isinstance(out, sg.ToHeartbeat):
                self.channels._to_heartbeat(self, out.msg)
            elif isinstance(out, sg.Violation):
                self.counters["violations"] += 1
                if self._log_every.due(now):
                    more = self._log_every.take_suppressed()
                    LOG.warning("instance %s messaging: %s%s", self.name, out.reason,
                                f" (+{more} more)" if more else "")

    # -- output ------------------------------------------------------------------------
    def deliver(self, app: dict[str, Any], dest_addr: str = sg.ADDR_SERVER_GROUP) -> bool:
        """Writes one app-layer message to the guest; False if it was dropped."""
        if self.transport is None or self.transport.is_closing() or self._write_paused:
            self.counters["write_dropped"] += 1
            return False
        self._step(sg.Deliver(app, dest_addr), time.monotonic())
        self.counters["delivered"] += 1
        return True

    def close(self) -> None:
        self.closing = True
        self._reads.cancel()
        if self.transport is not None:
            self.transport.abort()


class MessagingChannels:
    """All messaging sessions of one compute agent (discovery, connections,
    relaying to the controller and delivering from it)."""

    def __init__(self, agent: ComputeAgent, socket_pattern: str = DEFAULT_PATTERN,
                 config: sg.SessionConfig | None = None) -> None:
        self.agent = agent
        self.pattern = re.compile(socket_pattern)
        self.config = config or sg.SessionConfig(instance="")
        self.sessions: dict[str, MessagingSession] = {}
        self._found: dict[str, discovery.Found] = {}
        self._connects: set[asyncio.Task[None]] = set()
        self._running = False
        self._announced: tuple[str, ...] | None = None
        self._announced_at = 0.0
        self._links: dict[str, str] = {}
        self.counters = {"undeliverable": 0, "refused": 0, "forgotten": 0}

    def start(self) -> None:
        self._running = True
        self.rescan()
        for s in self.sessions.values():
            self._connect_soon(s, 0.0)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._connects)
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        for s in self.sessions.values():
            s.close()

    # -- discovery ---------------------------------------------------------------------
    def rescan(self) -> None:
        found = discovery.scan(self.agent.instances_dir, self.pattern, self._found,
                               key_group="name", lower=False)
        for name, item in found.items():
            s = self.sessions.get(name)
            if s is None:
                s = MessagingSession(self, name, item.path, replace(self.config, instance=name))
                s.inode = item.inode
                self.sessions[name] = s
                LOG.info("instance %s: messaging channel %s found", name, item.path)
                if self._running:
                    self._connect_soon(s, 0.0)
            elif s.inode != item.inode or s.path != item.path:
                s.inode, s.path, s.connect_failures = item.inode, item.path, 0
                if s.transport is None and self._running:
                    self._connect_soon(s, 0.0)
        for name in set(self.sessions) - set(found):
            s = self.sessions[name]
            if s.transport is None and not s.connecting:
                self._forget(s)
        self._found = found
        self._announce()

    def _announce(self, force: bool = False) -> None:
        # Tells the controller where these instances are (it routes by host)
        # and, where QEMU told us, which VM (uuid) each channel's name is.
        names = tuple(sorted(set(self.sessions) | set(self._single_port_sessions())))
        links = {s.name: s.uuid for s in self.sessions.values()
                 if s.uuid is not None and s.uuid != s.name}
        now = time.monotonic()
        if not force and names == self._announced and links == self._links \
                and now - self._announced_at < RESYNC_S:
            return
        if not names and self._announced is None:
            return  # nothing to say (and nothing said yet)
        self._announced, self._links, self._announced_at = names, links, now
        self.agent._cast("sg_instances", host=self.agent.host, instances=list(names))
        if links:  # with every placement: a controller that missed them gets them
            self.agent._cast("sg_links", host=self.agent.host, links=links)

    def _single_port_sessions(self) -> dict[str, Any]:
        # OPNFV single-port: heartbeat sessions carry server-group traffic too
        if not self.agent.single_port:
            return {}
        return {u: s for u, s in self.agent.sessions.items() if s.sg_state is not None}

    def _forget(self, s: MessagingSession) -> None:
        LOG.info("instance %s: messaging channel %s gone", s.name, s.path)
        s.close()
        self.sessions.pop(s.name, None)
        self.counters["forgotten"] += 1

    def _connect_soon(self, s: MessagingSession, delay: float) -> None:
        if s.connecting or s.transport is not None or s.closing:
            return
        s.connecting = True
        task = asyncio.get_running_loop().create_task(self._connect(s, delay))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)

    async def _connect(self, s: MessagingSession, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if s.closing or not self._running:
            s.connecting = False
            return
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: s, s.path)
        except OSError:
            s.connecting = False
            s.connect_failures += 1
            if s.name not in self._found:
                self._forget(s)
                return
            self._connect_soon(s, min(self.agent.reconnect_max_s,
                                      0.05 * 2 ** min(s.connect_failures, 10)))

    def _closed(self, s: MessagingSession) -> None:
        if not self._running or s.closing:
            return
        if s.name not in self._found:
            self._forget(s)
            return
        self._connect_soon(s, 0.0)

    # -- relaying ----------------------------------------------------------------------
    def _to_controller(self, s: MessagingSession, out: sg.ToController) -> None:
        self.relay(s.name, out)

    def relay(self, name: str, out: sg.ToController) -> None:
        """A guest request to the controller, from the channel known as `name`."""
        # The stamp is ours: the channel's name, whatever the guest wrote.
        payload = dict(out.payload, source_instance=name)
        if out.kind == sg.BROADCAST:
            self.agent._cast("sg_broadcast", host=self.agent.host, **payload)
        elif out.kind == sg.STATUS_QUERY:
            self.agent._cast("sg_status_query", host=self.agent.host, **payload)

    def _to_heartbeat(self, s: MessagingSession, msg: dict[str, Any]) -> None:
        # Single-port mode is served by the heartbeat session on cgcs.heartbeat;
        # a heartbeat message arriving here has nowhere to go.
        self.counters["refused"] += 1

    def deliver(self, instances: list[str], messages: list[dict[str, Any]]) -> dict[str, int]:
        """Each app-layer message, in order, to each named local instance."""
        delivered = dropped = 0
        single = self._single_port_sessions()
        for name in instances:
            s = self.sessions.get(name) or single.get(name)
            if s is None:
                self.counters["undeliverable"] += 1
                dropped += len(messages)
                continue
            for app in messages:
                if s.deliver(app):
                    delivered += 1
                else:
                    dropped += 1
        return {"delivered": delivered, "dropped": dropped}

    def stats(self) -> dict[str, Any]:
        totals: dict[str, int] = {}
        for s in self.sessions.values():
            for k, v in s.counters.items():
                totals[k] = totals.get(k, 0) + v
        return {"sessions": len(self.sessions),
                "connected": sum(1 for s in self.sessions.values() if s.transport is not None),
                **self.counters, **totals}


class ComputeEndpoint:
    """What the controller may call on a compute agent over the bus (only this:
    the bus exposes every public method of an endpoint)."""

    def __init__(self, channels: MessagingChannels) -> None:
        self._channels = channels

    async def sg_deliver_hosts(self, targets: Any, messages: Any) -> dict[str, Any]:
        """The fanout form: ``targets`` maps compute host → instances; this
        agent delivers only its own host's part."""
        if not isinstance(targets, dict):
            return {"ok": False, "error": "targets must be a mapping"}
        mine = targets.get(self._channels.agent.host)
        if mine is None:
            return {"ok": True, "delivered": 0, "dropped": 0}
        return await self.sg_deliver(mine, messages)

    async def sg_deliver(self, instances: Any, messages: Any) -> dict[str, Any]:
        if not isinstance(instances, list) or not all(isinstance(i, str) for i in instances):
            return {"ok": False, "error": "instances must be a list of strings"}
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("msg_type") in sg.HOST_TO_GUEST
                for m in messages):
            return {"ok": False, "error": "messages must be server-group app messages"}
        return {"ok": True, **self._channels.deliver(instances, messages)}
