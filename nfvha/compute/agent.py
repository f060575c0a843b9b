"""The compute agent: heartbeats every instance of this host. This module
is the wiring; the parts know nothing of it:

- an instance source (compute/sources/; default: the instances directory,
  polled every ~200 ms) offers the instances' QEMU chardev channels to the
  channel pool (compute/pool.py), which makes one session per channel
  (``InstanceSession``: host state machine + timer; ``MessagingSession``:
  server-group messaging), connects, reconnects, and forgets what was
  withdrawn;
- casts state changes (`instance_state`) to the controller in order, and
  *calls* every fault (`fault`) through an outbox that retries until the
  controller acks it; a lost heartbeat channel is first explained by the
  source (``explain_loss``: no fault, ``vm_crashed``, or ``channel_lost``);
- every ``report_interval_s`` tells every controller it is alive (`alive`,
  a fanout): the controllers flag a host gone silent (controller/hosts.py);
- on start casts `hello(host, instances)` so the controller can resync, and
  every ``sync_interval_s`` a digest of them (`sync`); the controller answers
  a mismatch with `resync`, and the agent with a fresh `hello`
  (nfvha/bus/inventory.py);
- serves, on the bus, the controller's ``sg_deliver`` casts to the
  messaging channels (compute/messaging.py), votes and notices
  (``instance_action``) and recovery actions (``recover``, carried out by
  the source: libvirt).
"""
from __future__ import annotations

import asyncio
import logging
import re
import resource
import time
import uuid as uuidlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nfvha.bus import Bus
from nfvha.bus.inventory import inventory_digest
from nfvha.compute import guestio
from nfvha.compute.messaging import ComputeEndpoint, MessagingChannels
from nfvha.compute.outbox import FaultOutbox
from nfvha.compute.pool import HEARTBEAT, MESSAGING, ChannelPool
from nfvha.compute.session import HeartbeatHooks, InstanceSession
from nfvha.compute.sources import (
    CHANNEL_LOST,
    RECOVERY_ACTIONS,
    VM_CRASHED,
    InstanceSource,
    LossVerdict,
)
from nfvha.compute.sources.directory import (
    HEARTBEAT_PATTERN,
    MESSAGING_PATTERN,
    DirectorySource,
)
from nfvha.compute.starvedlog import StarvedLog
from nfvha.gctune import tune_gc
from nfvha.protocol import host as hostsm
from nfvha.protocol import sgsession
from nfvha.protocol.host import HostConfig

LOG = logging.getLogger(__name__)

DEFAULT_PATTERN = HEARTBEAT_PATTERN
Observer = Callable[[str, Any, float], None]
EXPLAIN_TIMEOUT_S = 10.0  # a source that does not say why a channel closed: channel_lost
RECOVER_TIMEOUT_S = 300.0  # a recovery action that never ends is answered as failed
RECOVERIES_KEPT = 1024  # action ids remembered: a repeat is answered, not carried out again
MAX_ARG = 255  # longest action id, reply_to, instance uuid taken from the bus


class _Clock:
    """UTC wall time derived from the monotonic clock: one anchor, so
    timestamps keep their order and spacing even if NTP steps the clock."""

    def __init__(self) -> None:
        self.mono0 = time.monotonic()
        self.wall0 = datetime.now(timezone.utc)

    def iso(self, mono: float) -> str:
        return (self.wall0 + timedelta(seconds=mono - self.mono0)).isoformat(
            timespec="microseconds")


@dataclass
class _Recovery:
    instance_uuid: str
    action: str
    task: asyncio.Task[tuple[bool, str, str]]  # (ok, detail, done_at)


class ComputeAgent:
    def __init__(self, host: str, instances_dir: Path, bus: Bus,
                 socket_pattern: str = DEFAULT_PATTERN,
                 host_config: HostConfig = HostConfig(),
                 rate_limit_per_s: int = 50, *, scan_interval_s: float = 0.2,
                 reconnect_max_s: float = 2.0, messaging: bool = True,
                 messaging_pattern: str | None = None,
                 messaging_config: sgsession.SessionConfig | None = None,
                 spool_dir: Path | None = None, sync_interval_s: float = 30.0,
                 report_interval_s: float = 2.0,
                 source: InstanceSource | None = None,
                 read_batch_ms: float = 1.0) -> None:
        """`source`: where the channels come from; default: the sockets in
        `instances_dir` named by `socket_pattern` / `messaging_pattern`,
        scanned every `scan_interval_s` (those arguments serve only it).
        `read_batch_ms`: guest input is read in batches gathered this long
        (compute/guestio.py; 0: each socket as soon as it is readable)."""
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
        self.read_batch_ms = read_batch_ms
        self.started_at = ""  # wall time of start(): the controllers see a restart by it
        self._observers: list[Observer] = []
        self._casts: deque[tuple[str, dict[str, Any]]] = deque()
        self._cast_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._replies: set[asyncio.Task[Any]] = set()  # answers on their way to a controller
        self._explaining: set[asyncio.Task[None]] = set()  # lost channels asked about
        # a lost channel's "failed" waits for the source's verdict: a VM its
        # owner shut down must not look failed to the controller or its peers
        self._held: dict[str, tuple[hostsm.StateChanged, float] | None] = {}
        self._recoveries: OrderedDict[str, _Recovery] = OrderedDict()
        self._clock = _Clock()
        self._running = False
        self.outbox = FaultOutbox(self._deliver_fault, spool_dir=spool_dir)
        # Server-group messaging (None: off); its channels come from the same source.
        # single_port (OPNFV): it also shares the heartbeat channel.
        self.messaging_config = messaging_config or sgsession.SessionConfig(instance="")
        self.single_port = messaging and self.messaging_config.single_port
        self.hooks = HeartbeatHooks(on_output=self._output)
        self.pool = ChannelPool(
            host_config=host_config, rate_limit_per_s=rate_limit_per_s,
            heartbeat_hooks=self.hooks,
            single_port=self.messaging_config if self.single_port else None,
            reconnect_max_s=reconnect_max_s, on_change=self._channels_changed,
            report_fault=self.report_fault)
        self.sessions: dict[str, InstanceSession] = self.pool.heartbeat
        self.messaging: MessagingChannels | None = None
        if messaging:
            self.messaging = MessagingChannels(
                # late-bound: whoever wraps agent._cast sees these casts too
                host, lambda method, **kw: self._cast(method, **kw),
                sessions=self.pool.messaging, heartbeat_sessions=self.pool.heartbeat,
                single_port=self.single_port,
                # placement to every controller: any of them may route a broadcast
                fanout=lambda method, **kw: self.bus.fanout_controller(method, **kw))
            self.pool.serve_messaging(self.messaging.hooks, messaging_config)
            self.hooks.relay = self.messaging.relay
        self.source: InstanceSource = source if source is not None else DirectorySource(
            self.instances_dir, socket_pattern,
            (messaging_pattern or MESSAGING_PATTERN) if messaging else None,
            scan_interval_s=scan_interval_s)
        self.counters = {"faults": 0, "violations": 0, "state_changes": 0,
                         "observer_errors": 0, "forgotten": 0, "resyncs": 0,
                         "losses_explained": 0, "recoveries": 0, "recoveries_repeated": 0,
                         "recoveries_refused": 0, "starved": 0}
        self._starved_log = StarvedLog()
        self._starved_flush: asyncio.TimerHandle | None = None

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _raise_fd_limit()  # one socket per instance: a thousand exceed the usual 1024
        tune_gc()  # bench/heartbeat_scale.py at 1000 guests: RTT p99 9-11 -> 6-7 ms
        guestio.for_loop(loop).read_delay = self.read_batch_ms / 1000.0
        self._running = True
        self.started_at = self._clock.iso(time.monotonic())
        self.outbox.start()
        await self.source.start(self.pool)  # makes sessions; connects come after hello
        await self.bus.serve_compute(self.host, AgentEndpoint(self))
        await self.bus.cast_controller(
            "hello", host=self.host, agent_started_at=self.started_at,
            instances=[self._record(s) for s in self.sessions.values()])
        self._tasks = [loop.create_task(self._send_casts(), name="compute-casts")]
        if self.sync_interval_s > 0:
            self._tasks.append(loop.create_task(self._sync_loop(), name="compute-sync"))
        if self.report_interval_s > 0:
            self._tasks.append(loop.create_task(self._report_loop(), name="compute-alive"))
        if self.messaging is not None:
            self.messaging.start()
        self.pool.start()
        LOG.info("compute agent %s: instances from %s %s (%d)", self.host, self.source.name,
                 self.instances_dir if isinstance(self.source, DirectorySource) else "",
                 len(self.sessions))

    # GET /metrics ([compute] metrics_listen), compute/metrics.py; None: off
    metrics: Any = None

    def serve_metrics(self, listen: str) -> None:
        """Serves Prometheus metrics on `listen` (host:port) until stop(), in a
        thread; a scrape reads this agent on its loop (the running one).
        ValueError, saying why, if `listen` is no address to listen on."""
        from nfvha.compute.metrics import MetricsServer

        self.metrics = MetricsServer(self, listen)
        LOG.info("compute agent %s: metrics at %s", self.host, self.metrics.url)

    async def stop(self) -> None:
        self._running = False
        if self._starved_flush is not None:
            self._starved_flush.cancel()
            self._flush_starved()
        metrics, self.metrics = self.metrics, None
        if metrics is not None:  # its shutdown waits for the server's poll: off the loop
            await asyncio.to_thread(metrics.stop)
        for task in self._tasks:
            task.cancel()
        try:
            await self.source.stop()
        except Exception:
            LOG.exception("instance source %s did not stop cleanly", self.source.name)
        for session in self.sessions.values():
            session.end_action("compute agent stopping")  # still answered, as "unknown"
        # lost channels being explained: their faults reach the outbox (and spool)
        await _settle(self._explaining, 1.0)
        await _settle({r.task for r in self._recoveries.values()}, 1.0)
        await _settle(self._replies, 1.0)
        await self.pool.stop()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self.messaging is not None:
            await self.messaging.stop()
        await self.outbox.stop()

    def add_observer(self, callback: Observer) -> None:
        """`callback(instance_uuid, output, mono)` for every output of every
        session's machine (Send, StateChanged, Fault, Violation, RoundTrip);
        `mono` is the time.monotonic() at which the input was processed. A
        Fault is seen as it goes to the controller: a lost channel after the
        source explained it (its kind may then be vm_crashed; none if the
        source said it was no fault), still with the `mono` of the loss."""
        self._observers.append(callback)
        self.hooks.observed = True
        for session in list(self.sessions.values()):  # off the C path: every output is seen
            session.leave_steady_path()

    def _channels_changed(self, kind: str, key: str, present: bool) -> None:
        if kind == HEARTBEAT and not present:
            self.counters["forgotten"] += 1
        if self.messaging is not None and kind in (HEARTBEAT, MESSAGING):
            self.messaging.changed(kind, key, present)

    # -- outputs of the sessions ----------------------------------------------------------
    def _output(self, session: InstanceSession, out: Any, now: float) -> None:
        if isinstance(out, hostsm.StateChanged):
            if out.state == hostsm.FAILED and session.uuid in self._held:
                self._held[session.uuid] = (out, now)  # cast once the verdict is known
                return
            self._state_changed(session.uuid, out, now)
        elif isinstance(out, hostsm.Fault):
            if out.kind == CHANNEL_LOST:
                self._held.setdefault(session.uuid, None)
                self._explain(session, out, now)
            else:
                self._fault(session.uuid, out, now)
            return  # observers see it as it goes out
        elif isinstance(out, hostsm.Violation):
            self.counters["violations"] += 1
        elif isinstance(out, hostsm.Starved):
            # the host's fault, not the VM's: an operator alert, never a recovery
            self.counters["starved"] += out.active
            self._log_starved(session.uuid, out, now)
        self._notify(session.uuid, out, now)

    def _log_starved(self, uuid: str, out: hostsm.Starved, now: float) -> None:
        # a saturated host starves hundreds of guests at once: a line naming
        # one per second and one counting the rest (compute/starvedlog.py)
        for line in self._starved_log.record(uuid, out.active, out.detail, now,
                                             self._starved_count):
            LOG.warning("%s", line)
        at = self._starved_log.flush_at
        if at is not None and self._starved_flush is None:
            self._starved_flush = asyncio.get_running_loop().call_later(
                max(0.0, at - time.monotonic()), self._flush_starved)

    def _flush_starved(self) -> None:
        self._starved_flush = None
        for line in self._starved_log.flush(time.monotonic(), self._starved_count):
            LOG.warning("%s", line)

    def _starved_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.starved)

    def _state_changed(self, uuid: str, out: hostsm.StateChanged, now: float) -> None:
        self.counters["state_changes"] += 1
        times = {} if out.vote_secs is None else {
                "vote_secs": out.vote_secs, "shutdown_notice_secs": out.shutdown_notice_secs,
                "suspend_notice_secs": out.suspend_notice_secs,
            "resume_notice_secs": out.resume_notice_secs, "restart_secs": out.restart_secs}
        self._cast("instance_state", host=self.host, instance_uuid=uuid,
                   state=out.state, health=out.health, interval_ms=out.interval_ms,
                   corrective_action=out.corrective_action, name=out.name,
                   at=self._clock.iso(now), **times)

    def _notify(self, uuid: str, out: Any, now: float) -> None:
        for observer in self._observers:
            try:
                observer(uuid, out, now)
            except Exception:
                self.counters["observer_errors"] += 1
                LOG.exception("observer failed")

    def _fault(self, uuid: str, out: hostsm.Fault, now: float) -> str:
        self.counters["faults"] += 1
        event = {"id": str(uuidlib.uuid4()), "instance_uuid": uuid,
                 "host": self.host, "kind": out.kind,
                 "corrective_action": out.corrective_action, "detail": out.detail,
                 "detected_at": self._clock.iso(now), "detected_mono": now}
        LOG.warning("instance %s: fault %s (%s)", uuid, out.kind, out.detail)
        self.outbox.put(event)
        self._notify(uuid, out, now)
        return event["id"]

    def report_fault(self, uuid: str, kind: str, detail: str) -> str:
        """A fault no heartbeat channel reported (for a source: a domain
        crashed whose guest never registered or had already exited), with the
        guest's registered corrective action, "none" if it never registered.
        Returns the fault event's id."""
        key = uuid.lower()
        session = self.sessions.get(key)
        reg = session.state.registration if session is not None else None
        action = reg.corrective_action if reg is not None else "none"
        return self._fault(key, hostsm.Fault(kind, action, detail), time.monotonic())

    def _explain(self, session: InstanceSession, out: hostsm.Fault, now: float) -> None:
        task = asyncio.get_running_loop().create_task(self._explain_loss(session, out, now))
        self._explaining.add(task)
        task.add_done_callback(self._explaining.discard)

    def _release(self, session: InstanceSession) -> None:
        """The held "failed" goes out after all (the loss was a fault), unless
        the guest is back meanwhile (that newer state went out already)."""
        held = self._held.pop(session.uuid, None)
        if held is not None and session.state.phase == hostsm.FAILED:
            self._state_changed(session.uuid, *held)
            self._notify(session.uuid, *held)

    async def _explain_loss(self, session: InstanceSession, out: hostsm.Fault,
                            now: float) -> None:
        """The heartbeat channel of an enabled guest closed: the source says
        whether that is no fault, a crashed VM, or a lost channel."""
        uuid = session.uuid
        try:
            verdict = await asyncio.wait_for(self.source.explain_loss(uuid), EXPLAIN_TIMEOUT_S)
        except asyncio.CancelledError:
            self._fault(uuid, out, now)  # stopping: the fault stands, to the outbox/spool
            self._release(session)
            raise
        except Exception as exc:
            LOG.warning("instance %s: %s could not explain the channel loss (%s: %s)",
                        uuid, self.source.name, type(exc).__name__, exc)
            verdict = LossVerdict(CHANNEL_LOST)
        kind = getattr(verdict, "kind", CHANNEL_LOST)
        detail = getattr(verdict, "detail", "")
        if kind is None:
            self.counters["losses_explained"] += 1
            LOG.info("instance %s: channel closed, no fault (%s: %s)", uuid,
                     self.source.name, detail)
            self._held.pop(uuid, None)
            # not failed but gone for a reason: disabled (unless it came back meanwhile)
            if session.state.phase == hostsm.FAILED and session.transport is None:
                session.standby(str(detail) or "channel closed, no fault")
            return
        if kind == VM_CRASHED:
            out = replace(out, kind=VM_CRASHED, detail=str(detail) or out.detail)
        elif kind != CHANNEL_LOST:
            LOG.warning("instance %s: %s gave an unknown verdict %r: channel_lost stands",
                        uuid, self.source.name, kind)
        self._fault(uuid, out, now)
        self._release(session)

    def _record(self, session: InstanceSession) -> dict[str, Any]:
        return {**session.record(), "at": self._clock.iso(time.monotonic())}

    # -- keeping the controller's view in step ------------------------------------------
    def starved(self) -> list[str]:
        """Instances whose guests the host starves of CPU (host.Starved)."""
        return sorted(u for u, s in self.sessions.items() if s.starved)

    def digest(self) -> tuple[int, str]:
        items = [(u, s.phase, s.health) for u, s in self.sessions.items()]
        return len(items), inventory_digest(items)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval_s)
            count, digest = self.digest()
            self._cast("sync", host=self.host, count=count, digest=digest)

    # This host's management address ([compute] management_address): the
    # controllers probe it to tell a dead host from a dead agent. "": none.
    management_address: str = ""

    async def _report_loop(self) -> None:
        # Runs on the loop that runs the sessions: a hung loop goes silent too.
        while True:
            try:
                extra = {"management_address": self.management_address} \
                    if self.management_address else {}  # older controllers take no such word
                await self.bus.fanout_controller(
                    "alive", host=self.host, agent_started_at=self.started_at,
                    instances=len(self.sessions), starved=self.starved(), **extra)
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
            self.messaging.announce(force=True)

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
        self._reply_soon(self._reply_action(fut, request_id, reply_to, instance_uuid))

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

    # -- recovery (the controller's recovery sink asks; the source acts) -------------------
    def recover(self, action_id: Any, reply_to: Any, instance_uuid: Any,
                action: Any) -> dict[str, Any]:
        """Carries out `action` (reset | destroy) on the instance through the
        source, once per `action_id`: a repeat gets the first result. The
        session is put on standby first, so the silence and the channel loss
        the action causes are no fault. The result goes back to the
        controller `reply_to` as `recovery_result`; never raises."""
        error = _recover_error(action_id, reply_to, instance_uuid, action)
        if error is not None:
            self.counters["recoveries_refused"] += 1
            LOG.warning("recovery %r refused: %s", action_id, error)
            if _arg(action_id) and _arg(reply_to):  # the asker can match the answer
                self._reply_soon(self._reply_recovery(
                    None, (False, error, self._clock.iso(time.monotonic())), action_id,
                    reply_to, instance_uuid if _arg(instance_uuid) else ""))
            return {"ok": False, "error": error}
        rec = self._recoveries.get(action_id)
        duplicate = rec is not None
        if rec is None:
            uuid = instance_uuid.lower()
            task = asyncio.get_running_loop().create_task(self._carry_out(uuid, action))
            rec = _Recovery(instance_uuid, action, task)
            self._recoveries[action_id] = rec
            while len(self._recoveries) > RECOVERIES_KEPT:
                self._recoveries.popitem(last=False)
            self.counters["recoveries"] += 1
        else:
            self.counters["recoveries_repeated"] += 1
            if (rec.instance_uuid, rec.action) != (instance_uuid, action):
                LOG.warning("recovery %s asked again for %s %s, first for %s %s: "
                            "answered with the first", action_id, action, instance_uuid,
                            rec.action, rec.instance_uuid)
            else:
                LOG.info("recovery %s asked again: answered with its first result", action_id)
        self._reply_soon(self._reply_recovery(rec.task, None, action_id, reply_to,
                                              rec.instance_uuid))
        return {"ok": True, "duplicate": duplicate}

    async def _carry_out(self, uuid: str, action: str) -> tuple[bool, str, str]:
        if not getattr(self.source, "can_recover", True):
            # refused before anything happens: the guest stays monitored
            ok, detail = await self.source.recover(uuid, action)
            return ok, detail, self._clock.iso(time.monotonic())
        session = self.sessions.get(uuid)
        if session is not None:
            session.standby(f"recovery: {action}")
        LOG.warning("instance %s: recovery %s by %s", uuid, action, self.source.name)
        try:
            ok, detail = await asyncio.wait_for(self.source.recover(uuid, action),
                                                RECOVER_TIMEOUT_S)
            ok, detail = ok is True, str(detail)
        except asyncio.TimeoutError:
            ok, detail = False, f"{action} did not end within {RECOVER_TIMEOUT_S:.0f} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the source's failure is the action's result
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        (LOG.info if ok else LOG.warning)("instance %s: recovery %s %s: %s", uuid, action,
                                          "done" if ok else "failed", detail)
        return ok, detail, self._clock.iso(time.monotonic())

    async def _reply_recovery(self, task: asyncio.Task[tuple[bool, str, str]] | None,
                              result: tuple[bool, str, str] | None, action_id: str,
                              reply_to: str, instance_uuid: str) -> None:
        if task is not None:
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
                result = (False, "compute agent stopped during the action",
                          self._clock.iso(time.monotonic()))
        assert result is not None
        ok, detail, done_at = result
        try:
            await self.bus.reply_controller(
                reply_to, "recovery_result", action_id=action_id, host=self.host,
                instance_uuid=instance_uuid, ok=ok, detail=detail, done_at=done_at)
        except Exception:
            LOG.exception("recovery %s: result not sent to %s", action_id, reply_to)

    def _reply_soon(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

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
            phases[s.phase] = phases.get(s.phase, 0) + 1
        out: dict[str, Any] = {
            "host": self.host,
            "sessions": len(sessions),
            "connected": sum(1 for s in sessions if s.transport is not None),
            "phases": phases,
            "faults": self.counters["faults"],
            "faults_pending": self.outbox.pending,
            "faults_delivered": self.outbox.delivered,
            "fault_attempts": self.outbox.attempts,
            "faults_refused": self.outbox.refused,  # malformed, dropped: a refusal is final
            "violations": self.counters["violations"],
            "state_changes": self.counters["state_changes"],
            "source": self.source.name,
            "losses_explained": self.counters["losses_explained"],
            "recoveries": self.counters["recoveries"],
            **{f"session_{k}": v for k, v in totals.items()},
            "rtt_ms": [x for s in sessions for x in s.rtt_ms],
            "late_ms": [x for s in sessions for x in s.late_ms],
        }
        if self.messaging is not None:
            out["messaging"] = self.messaging.stats()
        if per_session:
            out["per_session"] = {
                s.uuid: {"phase": s.phase, "rtt_ms": list(s.rtt_ms),
                         "late_ms": list(s.late_ms), **s.counters}
                for s in sessions}
        return out

    def reset_samples(self) -> None:
        """Forget round-trip samples (e.g. after a benchmark's warm-up)."""
        for s in self.sessions.values():
            s.rtt_ms.clear()
            s.late_ms.clear()


def _arg(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ARG


def _recover_error(action_id: Any, reply_to: Any, instance_uuid: Any,
                   action: Any) -> str | None:
    for name, value in (("action_id", action_id), ("reply_to", reply_to),
                        ("instance_uuid", instance_uuid)):
        if not _arg(value):
            return f"{name} must be a non-empty string of at most {MAX_ARG}"
    if action not in RECOVERY_ACTIONS:
        return f"action must be one of {', '.join(RECOVERY_ACTIONS)}"
    return None


async def _settle(tasks: set[asyncio.Task[Any]], timeout: float) -> None:
    """Lets `tasks` finish for up to `timeout` s, then cancels the rest."""
    for task in list(tasks):
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (asyncio.TimeoutError, Exception):
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


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

    async def recover(self, action_id: Any = None, reply_to: Any = None,
                      instance_uuid: Any = None, action: Any = None,
                      **unknown: Any) -> dict[str, Any]:
        """A recovery action (reset | destroy) for one instance, once per
        action id; answered with `recovery_result` to the controller
        `reply_to`. Missing arguments are refused, unknown ones ignored (a
        newer controller may send more)."""
        if unknown:
            LOG.debug("recover: ignoring %s", sorted(unknown))
        return self._agent.recover(action_id, reply_to, instance_uuid, action)

    async def sg_deliver(self, instances: Any, messages: Any) -> dict[str, Any]:
        if self._sg is None:
            return {"ok": False, "error": "server-group messaging is off on this host"}
        return await self._sg.sg_deliver(instances, messages)

    async def sg_deliver_hosts(self, targets: Any, messages: Any) -> dict[str, Any]:
        if self._sg is None:
            return {"ok": False, "error": "server-group messaging is off on this host"}
        return await self._sg.sg_deliver_hosts(targets, messages)
