"""The compute agent: heartbeats every instance of this host.

- finds the instances' QEMU chardev sockets in a directory (polled every
  ~200 ms), connects to each (QEMU is the server), reconnects when the
  socket comes back, forgets sockets that disappear;
- runs one `InstanceSession` (host state machine + timer) per instance;
- casts state changes (`instance_state`) to the controller in order, and
  *calls* every fault (`fault`) through an outbox that retries until the
  controller acks it;
- every ``report_interval_s`` tells every controller it is alive (`alive`,
  a fanout): the controllers flag a host gone silent (controller/hosts.py);
- on start casts `hello(host, instances)` so the controller can resync, and
  every ``sync_interval_s`` a digest of them (`sync`); the controller answers
  a mismatch with `resync`, and the agent with a fresh `hello`
  (nfvha/bus/inventory.py);
- also serves the instances' server-group messaging channels
  (``cgcs.messaging.<name>.sock``, compute/messaging.py) and, on the bus,
  the controller's ``sg_deliver`` casts to them.
"""
from __future__ import annotations

import asyncio
import logging
import re
import resource
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nfvha.bus import Bus
from nfvha.bus.inventory import inventory_digest
from nfvha.compute import discovery
from nfvha.compute.messaging import ComputeEndpoint, MessagingChannels
from nfvha.compute.outbox import FaultOutbox
from nfvha.compute.session import InstanceSession
from nfvha.gctune import tune_gc
from nfvha.protocol import host as hostsm
from nfvha.protocol import servergroup as sg
from nfvha.protocol.host import HostConfig

LOG = logging.getLogger(__name__)

DEFAULT_PATTERN = r"cgcs\.heartbeat\.(?P<uuid>[0-9a-fA-F-]{36})\.sock$"
Observer = Callable[[str, Any, float], None]


class _Clock:
    """UTC wall time derived from the monotonic clock: one anchor, so
    timestamps keep their order and spacing even if NTP steps the clock."""

    def __init__(self) -> None:
        self.mono0 = time.monotonic()
        self.wall0 = datetime.now(timezone.utc)

    def iso(self, mono: float) -> str:
        return (self.wall0 + timedelta(seconds=mono - self.mono0)).isoformat(
            timespec="microseconds")


class ComputeAgent:
    def __init__(self, host: str, instances_dir: Path, bus: Bus,
                 socket_pattern: str = DEFAULT_PATTERN,
                 host_config: HostConfig = HostConfig(),
                 rate_limit_per_s: int = 50, *, scan_interval_s: float = 0.2,
                 reconnect_max_s: float = 2.0, messaging: bool = True,
                 messaging_pattern: str | None = None,
                 messaging_config: sg.SessionConfig | None = None,
                 spool_dir: Path | None = None, sync_interval_s: float = 30.0,
                 report_interval_s: float = 2.0) -> None:
        self.host = host
        self.instances_dir = Path(instances_dir)
        self.bus = bus
        self.pattern = re.compile(socket_pattern)
        self.host_config = host_config
        self.rate_limit_per_s = rate_limit_per_s
        self.scan_interval_s = scan_interval_s
        self.reconnect_max_s = reconnect_max_s
        self.sync_interval_s = sync_interval_s
        self.report_interval_s = report_interval_s
        self.started_at = ""  # wall time of start(): the controllers see a restart by it
        self.sessions: dict[str, InstanceSession] = {}
        self._found: dict[str, discovery.Found] = {}
        self._observers: list[Observer] = []
        self._casts: deque[tuple[str, dict[str, Any]]] = deque()
        self._cast_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._connects: set[asyncio.Task[None]] = set()
        self._replies: set[asyncio.Task[None]] = set()  # action results on their way
        self._clock = _Clock()
        self._running = False
        self.outbox = FaultOutbox(self._deliver_fault, spool_dir=spool_dir)
        # Server-group messaging (None: off); its sockets share instances_dir.
        # single_port (OPNFV): it also shares the heartbeat channel.
        self.messaging_config = messaging_config or sg.SessionConfig(instance="")
        self.single_port = messaging and self.messaging_config.single_port
        self.messaging: MessagingChannels | None = None
        if messaging:
            self.messaging = MessagingChannels(
                self, **({"socket_pattern": messaging_pattern} if messaging_pattern else {}),
                config=messaging_config)
        self.counters = {"faults": 0, "violations": 0, "state_changes": 0,
                         "observer_errors": 0, "forgotten": 0, "resyncs": 0}

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _raise_fd_limit()  # one socket per instance: a thousand exceed the usual 1024
        tune_gc()  # bench/heartbeat_scale.py at 1000 guests: RTT p99 9-11 -> 6-7 ms
        self._running = True
        self.started_at = self._clock.iso(time.monotonic())
        self.outbox.start()
        self._rescan()  # creates sessions; connects come after hello
        await self.bus.serve_compute(self.host, AgentEndpoint(self))
        await self.bus.cast_controller(
            "hello", host=self.host, agent_started_at=self.started_at,
            instances=[self._record(s) for s in self.sessions.values()])
        self._tasks = [loop.create_task(self._send_casts(), name="compute-casts"),
                       loop.create_task(self._scan_loop(), name="compute-scan")]
        if self.sync_interval_s > 0:
            self._tasks.append(loop.create_task(self._sync_loop(), name="compute-sync"))
        if self.report_interval_s > 0:
            self._tasks.append(loop.create_task(self._report_loop(), name="compute-alive"))
        for session in self.sessions.values():
            self._connect_soon(session, 0.0)
        if self.messaging is not None:
            self.messaging.start()
        LOG.info("compute agent %s watching %s (%d instances)", self.host,
                 self.instances_dir, len(self.sessions))

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        for session in self.sessions.values():
            session.end_action("compute agent stopping")  # still answered, as "unknown"
        for task in list(self._replies):
            try:
                await asyncio.wait_for(asyncio.shield(task), 1.0)
            except (asyncio.TimeoutError, Exception):
                task.cancel()
        for task in list(self._connects):
            task.cancel()
        for task in [*self._tasks, *self._connects]:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self.messaging is not None:
            await self.messaging.stop()
        for session in self.sessions.values():
            session.close()
        await self.outbox.stop()

    def add_observer(self, callback: Observer) -> None:
        """`callback(instance_uuid, output, mono)` for every output of every
        session's machine (Send, StateChanged, Fault, Violation, RoundTrip);
        `mono` is the time.monotonic() at which the input was processed."""
        self._observers.append(callback)

    # -- discovery and connections ----------------------------------------------------
    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval_s)
            try:
                self._rescan()
                if self.messaging is not None:
                    self.messaging.rescan()
            except Exception:
                LOG.exception("scanning %s failed", self.instances_dir)

    def _rescan(self) -> None:
        found = discovery.scan(self.instances_dir, self.pattern, self._found)
        for uuid, item in found.items():
            session = self.sessions.get(uuid)
            if session is None:
                session = InstanceSession(self, uuid, item.path, self.host_config,
                                          self.rate_limit_per_s)
                session.inode = item.inode
                self.sessions[uuid] = session
                LOG.info("instance %s: channel %s found", uuid, item.path)
                if self._running:
                    self._connect_soon(session, 0.0)
            elif session.inode != item.inode or session.path != item.path:
                # QEMU made a new socket: connect now rather than after backoff.
                session.inode, session.path = item.inode, item.path
                session.connect_failures = 0
                if session.transport is None and self._running:
                    self._connect_soon(session, 0.0)
        for uuid in set(self.sessions) - set(found):
            session = self.sessions[uuid]
            if session.transport is None and not session.connecting:
                self._forget(session)
            # else: still connected through the unlinked socket; forgotten on close
        self._found = found

    def _forget(self, session: InstanceSession) -> None:
        LOG.info("instance %s: channel %s gone", session.uuid, session.path)
        session.close()
        self.sessions.pop(session.uuid, None)
        self.counters["forgotten"] += 1

    def _connect_soon(self, session: InstanceSession, delay: float) -> None:
        if session.connecting or session.transport is not None or session.closing:
            return
        session.connecting = True
        task = asyncio.get_running_loop().create_task(self._connect(session, delay))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)

    async def _connect(self, session: InstanceSession, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if session.closing or not self._running:
            session.connecting = False
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.create_unix_connection(lambda: session, session.path)
        except OSError as exc:
            session.connecting = False
            session.connect_failures += 1
            if session.uuid not in self._found:
                self._forget(session)
                return
            backoff = min(self.reconnect_max_s, 0.05 * 2 ** min(session.connect_failures, 10))
            if session.connect_failures in (1, 10) or session.connect_failures % 100 == 0:
                LOG.info("instance %s: connect %s failed (%s); retry in %.2fs",
                         session.uuid, session.path, exc, backoff)
            self._connect_soon(session, backoff)

    def _session_closed(self, session: InstanceSession) -> None:
        if not self._running or session.closing:
            return
        if session.uuid not in self._found:
            self._forget(session)
            return
        # QEMU closed our connection: try again at once (it may still listen).
        self._connect_soon(session, 0.0)

    # -- outputs of the sessions ----------------------------------------------------------
    def _output(self, session: InstanceSession, out: Any, now: float) -> None:
        if isinstance(out, hostsm.StateChanged):
            self.counters["state_changes"] += 1
            times = {} if out.vote_secs is None else {
                "vote_secs": out.vote_secs, "shutdown_notice_secs": out.shutdown_notice_secs,
                "suspend_notice_secs": out.suspend_notice_secs,
                "resume_notice_secs": out.resume_notice_secs, "restart_secs": out.restart_secs}
            self._cast("instance_state", host=self.host, instance_uuid=session.uuid,
                       state=out.state, health=out.health, interval_ms=out.interval_ms,
                       corrective_action=out.corrective_action, name=out.name,
                       at=self._clock.iso(now), **times)
        elif isinstance(out, hostsm.Fault):
            self.counters["faults"] += 1
            event = {"id": str(uuidlib.uuid4()), "instance_uuid": session.uuid,
                     "host": self.host, "kind": out.kind,
                     "corrective_action": out.corrective_action, "detail": out.detail,
                     "detected_at": self._clock.iso(now), "detected_mono": now}
            LOG.warning("instance %s: fault %s (%s)", session.uuid, out.kind, out.detail)
            self.outbox.put(event)
        elif isinstance(out, hostsm.Violation):
            self.counters["violations"] += 1
        for observer in self._observers:
            try:
                observer(session.uuid, out, now)
            except Exception:
                self.counters["observer_errors"] += 1
                LOG.exception("observer failed")

    def _record(self, session: InstanceSession) -> dict[str, Any]:
        return {**session.record(), "at": self._clock.iso(time.monotonic())}

    # -- keeping the controller's view in step ------------------------------------------
    def digest(self) -> tuple[int, str]:
        items = [(u, s.state.phase, s.state.health) for u, s in self.sessions.items()]
        return len(items), inventory_digest(items)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval_s)
            count, digest = self.digest()
            self._cast("sync", host=self.host, count=count, digest=digest)

    async def _report_loop(self) -> None:
        # Runs on the loop that runs the sessions: a hung loop goes silent too.
        while True:
            try:
                await self.bus.fanout_controller(
                    "alive", host=self.host, agent_started_at=self.started_at,
                    instances=len(self.sessions))
            except Exception:
                LOG.exception("alive not sent")
            await asyncio.sleep(self.report_interval_s)

    def resync(self) -> None:
        """The controller's view drifted: send the whole list, in order
        after every state change already queued."""
        self.counters["resyncs"] += 1
        LOG.info("controller asked for a resync: sending %d instances", len(self.sessions))
        self._cast("hello", host=self.host, agent_started_at=self.started_at,
                   instances=[self._record(s) for s in self.sessions.values()])
        if self.messaging is not None:  # where its messaging channels are, too
            self.messaging._announce(force=True)

    # -- votes and notices ------------------------------------------------------------------
    def instance_action(self, request_id: str, reply_to: str, instance_uuid: str,
                        event_type: str, notification_type: str, timeout_ms: Any) -> None:
        session = self.sessions.get(instance_uuid) if isinstance(instance_uuid, str) else None
        if not isinstance(timeout_ms, (int, type(None))) or isinstance(timeout_ms, bool):
            fut: asyncio.Future[hostsm.ActionResult] = \
                asyncio.get_running_loop().create_future()
            fut.set_result(hostsm.ActionResult(str(event_type), str(notification_type),
                                               "error", "timeout_ms must be an integer"))
        elif session is None:
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(hostsm.ActionResult(str(event_type), str(notification_type),
                                               "unknown", f"instance not on {self.host}"))
        else:
            fut = session.notify_action(str(event_type), str(notification_type), timeout_ms)
        task = asyncio.get_running_loop().create_task(
            self._reply_action(fut, request_id, reply_to, instance_uuid))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _reply_action(self, fut: asyncio.Future[hostsm.ActionResult], request_id: str,
                            reply_to: str, instance_uuid: str) -> None:
        out = await fut
        LOG.info("instance %s: %s %s -> %s %s", instance_uuid, out.notification_type,
                 out.event_type, out.result, out.log_msg)
        try:
            await self.bus.reply_controller(
                str(reply_to), "action_result", request_id=request_id, host=self.host,
                instance_uuid=instance_uuid, event_type=out.event_type,
                notification_type=out.notification_type, result=out.result,
                log_msg=out.log_msg)
        except Exception:
            LOG.exception("instance %s: action result not sent", instance_uuid)

    def _cast(self, method: str, **kwargs: Any) -> None:
        self._casts.append((method, kwargs))
        self._cast_ready.set()

    async def _send_casts(self) -> None:
        # One sender keeps the controller's view in the order things happened.
        while True:
            await self._cast_ready.wait()
            self._cast_ready.clear()
            while self._casts:
                method, kwargs = self._casts.popleft()
                try:
                    await self.bus.cast_controller(method, **kwargs)
                except Exception:
                    LOG.exception("cast %s failed", method)

    async def _deliver_fault(self, event: dict[str, Any]) -> Any:
        return await self.bus.call_controller("fault", event=event)

    # -- figures ---------------------------------------------------------------------------
    def stats(self, per_session: bool = False) -> dict[str, Any]:
        """Counters and samples for benchmarks and the CLI.

        ``rtt_ms``: challenge round trips (challenge written -> valid answer
        read), all sessions; ``late_ms``: how late challenges left after their
        deadline (the loop's scheduling delay)."""
        sessions = list(self.sessions.values())
        totals: dict[str, int] = {}
        for s in sessions:
            for key, value in s.counters.items():
                totals[key] = totals.get(key, 0) + value
        phases: dict[str, int] = {}
        for s in sessions:
            phases[s.state.phase] = phases.get(s.state.phase, 0) + 1
        out: dict[str, Any] = {
            "host": self.host,
            "sessions": len(sessions),
            "connected": sum(1 for s in sessions if s.transport is not None),
            "phases": phases,
            "faults": self.counters["faults"],
            "faults_pending": self.outbox.pending,
            "faults_delivered": self.outbox.delivered,
            "fault_attempts": self.outbox.attempts,
            "violations": self.counters["violations"],
            "state_changes": self.counters["state_changes"],
            **{f"session_{k}": v for k, v in totals.items()},
            "rtt_ms": [x for s in sessions for x in s.rtt_ms],
            "late_ms": [x for s in sessions for x in s.late_ms],
        }
        if self.messaging is not None:
            out["messaging"] = self.messaging.stats()
        if per_session:
            out["per_session"] = {
                s.uuid: {"phase": s.state.phase, "rtt_ms": list(s.rtt_ms),
                         "late_ms": list(s.late_ms), **s.counters}
                for s in sessions}
        return out

    def reset_samples(self) -> None:
        """Forget round-trip samples (e.g. after a benchmark's warm-up)."""
        for s in self.sessions.values():
            s.rtt_ms.clear()
            s.late_ms.clear()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class AgentEndpoint:
    """What the controller may call on a compute agent over the bus (the bus
    exposes every public method of an endpoint: only these)."""

    def __init__(self, agent: ComputeAgent) -> None:
        self._agent = agent
        self._sg = ComputeEndpoint(agent.messaging) if agent.messaging is not None else None

    async def resync(self) -> dict[str, Any]:
        self._agent.resync()
        return {"ok": True}

    async def instance_action(self, request_id: str, reply_to: str, instance_uuid: str,
                              event_type: str, notification_type: str = "revocable",
                              timeout_ms: Any = None) -> dict[str, Any]:
        """A vote or notice for one instance (the controller's REST API asked);
        the result goes back to the controller that asked (`action_result`)."""
        self._agent.instance_action(request_id, reply_to, instance_uuid, event_type,
                                    notification_type, timeout_ms)
        return {"ok": True}

    async def sg_deliver(self, instances: Any, messages: Any) -> dict[str, Any]:
        if self._sg is None:
            return {"ok": False, "error": "server-group messaging is off on this host"}
        return await self._sg.sg_deliver(instances, messages)

    async def sg_deliver_hosts(self, targets: Any, messages: Any) -> dict[str, Any]:
        if self._sg is None:
            return {"ok": False, "error": "server-group messaging is off on this host"}
        return await self._sg.sg_deliver_hosts(targets, messages)
