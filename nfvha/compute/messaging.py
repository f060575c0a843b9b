"""Server-group messaging channels of the instances on this compute host.

- one ``MessagingSession`` per instance (``cgcs.messaging.<instance-name>``:
  QEMU's chardev for the guest's ``cgcs.messaging`` virtio-serial port;
  made, connected and forgotten by the channel pool, compute/pool.py) drives
  the sans-I/O host machine ``nfvha.protocol.sgsession.session_step``;
- ``MessagingChannels`` relays guest broadcasts and status queries to the
  controller with ``source_instance`` set here, from the channel's name — a
  guest can never choose or spoof it; tells every controller (a fanout:
  any of them may route the next broadcast) where these instances are
  (``sg_instances``) and which VM each is (``sg_links``), each time the
  whole host's list, so a message lost or expired on the way is made good
  by the next;
  ``deliver(instances, messages)`` writes the controller's app-layer
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
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nfvha.compute import codec, qemu_peer
from nfvha.compute.channel import GuestChannel
from nfvha.compute.ratelimit import Every
from nfvha.protocol import sgsession, sgwire
from nfvha.protocol.framing import FrameError

LOG = logging.getLogger(__name__)

DEFAULT_PATTERN = r"cgcs\.messaging\.(?P<name>[^/]+)\.sock$"
READ_SIZE = 8192
BYTE_BUDGET_PER_S = 256 * 1024  # 40 full-size messages a second and then some
WRITE_HIGH_WATER = 64 * 1024  # ~16 full-size messages waiting for a slow guest
RESYNC_S = 30.0  # instance list re-sent so a restarted controller learns placement
Cast = Callable[..., None]  # cast(method, **kwargs): queued, in order, to the controller
Fanout = Callable[..., Awaitable[None]]  # await fanout(method, **kwargs): to every controller


@dataclass(eq=False)
class MessagingHooks:
    """Where messaging sessions report (given to each when it is made)."""

    to_controller: Callable[[MessagingSession, sgsession.ToController], None]
    to_heartbeat: Callable[[MessagingSession, dict[str, Any]], None]
    vm_changed: Callable[[MessagingSession], None]  # QEMU names another VM uuid


class MessagingSession(GuestChannel):
    """One instance's messaging channel; survives reconnections."""

    def __init__(self, name: str, path: str, config: sgsession.SessionConfig, *,
                 hooks: MessagingHooks,
                 on_closed: Callable[[GuestChannel], None] | None = None) -> None:
        super().__init__(READ_SIZE, BYTE_BUDGET_PER_S, WRITE_HIGH_WATER, on_closed)
        self.label = f"instance {name} messaging"
        self.hooks = hooks
        self.name = name
        self.path = path
        self.state = sgsession.session(config)
        self.decoder = codec.line_decoder(sgwire.MAX_MSG)
        self._log_every = Every(1.0)
        self.counters.update(to_controller=0, delivered=0)
        # the VM's uuid, from the QEMU at the other end, else from the source
        # that offered the channel (None: not known)
        self.uuid: str | None = None
        self.known_uuid: str | None = None

    # -- asyncio callbacks -------------------------------------------------------------
    def _on_connected(self) -> None:
        self.decoder = codec.line_decoder(sgwire.MAX_MSG)
        sock = self.transport.get_extra_info("socket") if self.transport else None
        uuid, _ = qemu_peer.vm_of(sock) if sock is not None else (None, None)
        uuid = uuid or self.known_uuid
        if uuid != self.uuid:
            self.uuid = uuid
            self.hooks.vm_changed(self)  # the links changed: they are sent

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._reads.cancel()
        self._closed()

    # -- input -------------------------------------------------------------------------
    def _on_bytes(self, data: bytes, now: float) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                self._step(sgsession.Malformed(item.reason), now)
            else:
                self._step(sgsession.Received(item), now)

    def _step(self, event: Any, now: float) -> None:
        self.state, outputs = sgsession.session_step(self.state, event, now)
        for out in outputs:
            if isinstance(out, sgsession.Send):
                self._write_raw(out.msg)
            elif isinstance(out, sgsession.ToController):
                self.counters["to_controller"] += 1
                self.hooks.to_controller(self, out)
            elif isinstance(out, sgsession.ToHeartbeat):
                self.hooks.to_heartbeat(self, out.msg)
            elif isinstance(out, sgsession.Violation):
                self.counters["violations"] += 1
                if self._log_every.due(now):
                    more = self._log_every.take_suppressed()
                    LOG.warning("instance %s messaging: %s%s", self.name, out.reason,
                                f" (+{more} more)" if more else "")

    # -- output ------------------------------------------------------------------------
    def deliver(self, app: dict[str, Any], dest_addr: str = sgwire.ADDR_SERVER_GROUP) -> bool:
        """Writes one app-layer message to the guest; False if it was dropped."""
        if self.transport is None or self.transport.is_closing() or self._write_paused:
            self.counters["write_dropped"] += 1
            return False
        self._step(sgsession.Deliver(app, dest_addr), time.monotonic())
        self.counters["delivered"] += 1
        return True

    def close(self) -> None:
        self.closing = True
        self._reads.cancel()
        if self.transport is not None:
            self.transport.abort()


class MessagingChannels:
    """Server-group messaging of one compute agent: relaying the guests'
    requests to the controller, delivering the controller's messages, and
    telling it where the instances are. The sessions are the pool's
    (``sessions``: messaging channels by name; ``heartbeat_sessions``: the
    heartbeat sessions, which carry it too in single-port mode)."""

    def __init__(self, host: str, cast: Cast, *,
                 sessions: Mapping[str, MessagingSession] | None = None,
                 heartbeat_sessions: Mapping[str, Any] | None = None,
                 single_port: bool = False, fanout: Fanout | None = None) -> None:
        """`fanout`: how the placement reaches every controller (the bus's
        fanout_controller); None: cast like the guests' requests (one
        controller)."""
        self.host = host
        self._cast = cast
        self._fanout = fanout
        self._fanouts: deque[tuple[str, dict[str, Any]]] = deque()
        self._fanout_ready = asyncio.Event()
        self.sessions: Mapping[str, MessagingSession] = sessions if sessions is not None else {}
        self.heartbeat_sessions: Mapping[str, Any] = \
            heartbeat_sessions if heartbeat_sessions is not None else {}
        self.single_port = single_port
        self.hooks = MessagingHooks(to_controller=self._to_controller,
                                    to_heartbeat=self._to_heartbeat,
                                    vm_changed=lambda s: self.announce())
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._announce_soon: asyncio.Handle | None = None
        self._announced: tuple[str, ...] | None = None
        self._announced_at = 0.0
        self._links: dict[str, str] = {}
        self.counters = {"undeliverable": 0, "refused": 0, "forgotten": 0}

    def start(self) -> None:
        self._running = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send_fanouts(), name="compute-sg-fanout")]
        self.announce()
        self._tasks.append(loop.create_task(self._resend_loop(), name="compute-sg-announce"))

    async def stop(self) -> None:
        self._running = False
        if self._announce_soon is not None:
            self._announce_soon.cancel()
            self._announce_soon = None
        for task in self._tasks:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []

    # -- placement ---------------------------------------------------------------------
    def changed(self, kind: str, key: str, present: bool) -> None:
        """The pool made or forgot a channel: the placement is announced
        (once for a burst of changes, e.g. a thousand sockets found)."""
        if kind == "messaging" and not present:
            self.counters["forgotten"] += 1
        if kind == "heartbeat" and not self.single_port:
            return
        if self._running and self._announce_soon is None:
            self._announce_soon = asyncio.get_running_loop().call_soon(self._announce_now)

    def _announce_now(self) -> None:
        self._announce_soon = None
        self.announce()

    async def _resend_loop(self) -> None:
        # a controller that missed the placement (restarted) gets it again
        while True:
            await asyncio.sleep(min(1.0, RESYNC_S))
            try:
                self.announce()
            except Exception:
                LOG.exception("server-group placement not announced")

    def announce(self, force: bool = False) -> None:
        """Tells the controller where these instances are (it routes by host)
        and, where QEMU told us, which VM (uuid) each channel's name is; only
        when that changed, `RESYNC_S` passed, or `force`."""
        if not self._running and not force:
            return
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
        self._to_controllers("sg_instances", host=self.host, instances=list(names))
        if links:  # with every placement: a controller that missed them gets them
            self._to_controllers("sg_links", host=self.host, links=links)

    def _to_controllers(self, method: str, **kwargs: Any) -> None:
        if self._fanout is None:
            self._cast(method, **kwargs)
            return
        self._fanouts.append((method, kwargs))
        self._fanout_ready.set()

    async def _send_fanouts(self) -> None:
        # one sender: the controllers get the snapshots in the order made
        while True:
            await self._fanout_ready.wait()
            self._fanout_ready.clear()
            while self._fanouts:
                method, kwargs = self._fanouts.popleft()
                try:
                    assert self._fanout is not None
                    await self._fanout(method, **kwargs)
                except Exception:  # the next announce (RESYNC_S at most) repeats it
                    LOG.exception("server-group %s not sent to the controllers", method)

    _announce = announce  # the older name

    def _single_port_sessions(self) -> dict[str, Any]:
        # OPNFV single-port: heartbeat sessions carry server-group traffic too
        if not self.single_port:
            return {}
        return {u: s for u, s in self.heartbeat_sessions.items()
                if getattr(s, "sg_state", None) is not None}

    # -- relaying ----------------------------------------------------------------------
    def _to_controller(self, s: MessagingSession, out: sgsession.ToController) -> None:
        self.relay(s.name, out)

    def relay(self, name: str, out: sgsession.ToController) -> None:
        """A guest request to the controller, from the channel known as `name`."""
        # The stamp is ours: the channel's name, whatever the guest wrote.
        payload = dict(out.payload, source_instance=name)
        if out.kind == sgwire.BROADCAST:
            self._cast("sg_broadcast", host=self.host, **payload)
        elif out.kind == sgwire.STATUS_QUERY:
            self._cast("sg_status_query", host=self.host, **payload)

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
        mine = targets.get(self._channels.host)
        if mine is None:
            return {"ok": True, "delivered": 0, "dropped": 0}
        return await self.sg_deliver(mine, messages)

    async def sg_deliver(self, instances: Any, messages: Any) -> dict[str, Any]:
        if not isinstance(instances, list) or not all(isinstance(i, str) for i in instances):
            return {"ok": False, "error": "instances must be a list of strings"}
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("msg_type") in sgwire.HOST_TO_GUEST
                for m in messages):
            return {"ok": False, "error": "messages must be server-group app messages"}
        return {"ok": True, **self._channels.deliver(instances, messages)}
