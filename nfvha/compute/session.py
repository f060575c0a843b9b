"""One instance's heartbeat channel: bytes <-> the host state machine.

Rules that bind this file:
- All protocol decisions are made by ``nfvha.protocol.host.step``; this
  class only moves bytes, keeps one timer on the machine's deadline, and
  hands the outputs on through the ``HeartbeatHooks`` it was made with (the
  agent's wiring: bus, outbox, observers); it knows no agent.
- The guest is untrusted and must not cost its neighbours anything that
  shows: reads are at most READ_SIZE bytes (a bounded amount of parsing per
  loop turn), a byte budget pauses reading when exceeded, decoded messages
  beyond ``rate_limit_per_s`` are dropped and counted (with at most one nack
  a second), writes to a guest that does not read are dropped past a small
  buffer, and no exception ever leaves a callback.
- An asyncio (buffered) Protocol, not streams: no task per guest, so a
  thousand sessions fit in one loop on one core.
- OPNFV single-port mode (made with ``single_port``): every frame is a base
  layer v2 envelope; the server-group session machine splits them by
  ``dest_addr`` — ``cgcs.heartbeat`` to the heartbeat machine (whose
  messages go out wrapped the same way), ``cgcs.server_grp`` to the
  controller like a messaging channel's (``hooks.relay``), with
  ``source_instance`` = this instance's uuid.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from nfvha.compute import codec, cpusample, guestio, steady, steadyloop, timers
from nfvha.compute.channel import GuestChannel
from nfvha.compute.ratelimit import Every, TokenBucket
from nfvha.compute.samples import Samples
from nfvha.protocol import heartbeat as hb
from nfvha.protocol import host
from nfvha.protocol import servergroup as sg
from nfvha.protocol.framing import FrameError

LOG = logging.getLogger(__name__)

READ_SIZE = 4096  # bytes per read: bounds the parsing one guest causes per loop turn
BYTE_BUDGET_PER_S = 64 * 1024  # a healthy guest sends ~100 B per interval
WRITE_HIGH_WATER = 16 * 1024  # a guest that does not read gets no more than this queued
SAMPLES = 1024  # round-trip samples kept per session (~100 s at 100 ms)


def _drop(*args: Any) -> None:
    pass


@dataclass(eq=False)
class HeartbeatHooks:
    """Where heartbeat sessions report; one object shared by all of them, so
    `observed` can be switched on for every session at once."""

    # every output but Send and RoundTrip (those too when `observed`):
    # on_output(session, output, mono)
    on_output: Callable[[InstanceSession, Any, float], None] = _drop
    # single-port: a guest's server-group request, relay(instance, ToController)
    relay: Callable[[str, sg.ToController], None] | None = None
    observed: bool = False  # someone watches every output (the hot path skips on_output)
    # the steady state's cycles on the C path (compute/steady.py), when it is built
    steady: bool = True


class InstanceSession(GuestChannel):
    """The protocol object of one instance; reused across reconnections, so
    the machine state (and its registration) survives a channel flap."""

    def __init__(self, instance_uuid: str, path: str, config: host.HostConfig,
                 rate_limit_per_s: int, *, hooks: HeartbeatHooks | None = None,
                 on_closed: Callable[[GuestChannel], None] | None = None,
                 single_port: sg.SessionConfig | None = None) -> None:
        super().__init__(READ_SIZE, BYTE_BUDGET_PER_S, WRITE_HIGH_WATER, on_closed)
        self.label = f"instance {instance_uuid}"
        self.hooks = hooks or HeartbeatHooks()
        self.uuid = instance_uuid
        self.path = path
        now = time.monotonic()
        # the machine on the C path while it is in the steady state (compute/steady.py),
        # served by the loop's engine (compute/steadyloop.py), which then keeps its
        # timer too; `state` takes a snapshot of it to read it
        self._fast: Any = None
        self._engine: steadyloop.SteadyLoop | None = None
        # the secret key of the machine's nonce PRF: challenges a guest cannot predict
        self._state = host.initial(config, nonce_seed=int.from_bytes(os.urandom(32), "big"))
        self.peer_pid: int | None = None  # who answers for the guest (its QEMU), if known
        self._fd = -1  # the channel's socket, to see input not read yet
        # single-port: the server-group machine sees every frame first
        self.sg_state: sg.SessionState | None = None
        if single_port is not None:
            self.sg_state = sg.session(replace(single_port, instance=instance_uuid))
        self._max_msg = hb.MAX_MSG if self.sg_state is None else sg.MAX_MSG
        self.decoder = codec.line_decoder(self._max_msg)
        # on the loop's one timer wheel (compute/timers.py), not a loop handle each
        self._timers: timers.Timers | None = None
        self._timer: timers.Timer | None = None
        self._timer_when: float | None = None  # the machine's deadline the timer serves
        self._timer_at: float | None = None  # when the timer actually fires (with spread)
        self._timer_early = False  # the timer feeds Tick(early=True): re-phasing
        self._messages = TokenBucket(rate_limit_per_s, rate_limit_per_s, now)
        self._nack_every = Every(1.0)
        self._log_every = Every(1.0)
        # figures for stats() and benchmarks
        self.rtt_ms = Samples(SAMPLES)
        self.late_ms = Samples(SAMPLES)  # how late challenges left after their timer was due
        # a vote/notice asked of the guest: the one pending, and the one being asked
        self._action: asyncio.Future[host.ActionResult] | None = None
        self._asking: asyncio.Future[host.ActionResult] | None = None
        self.counters.update(dropped=0, nacks=0, faults=0)

    @property
    def state(self) -> host.HostState:
        """The machine's state (brought up to date from the C path if it is there)."""
        if self._fast is not None:  # a snapshot: the C path carries on (it exports all it holds)
            self._state = steady.leave(self._state, self._fast)
        return self._state

    @state.setter
    def state(self, value: host.HostState) -> None:
        if self._fast is not None:
            self._leave_fast()
        self._state = value

    # What the C path never changes (it runs only while enabled, healthy, not
    # starved, registered): read without a snapshot.
    @property
    def phase(self) -> str:
        return self._state.phase

    @property
    def health(self) -> str | None:
        return self._state.health

    @property
    def starved(self) -> bool:
        return self._state.starved

    @property
    def on_steady_path(self) -> bool:
        """Whether the machine is on the C steady path right now (compute/steady.py)."""
        return self._fast is not None

    def _leave_fast(self, arm: bool = True) -> None:
        # off the engine (if it has not handed the session back already), the
        # state back from the C path, and the timer back on the Python wheel
        fast, self._fast = self._fast, None
        if self._engine is not None:
            self._engine.discard(fast)
        self._state = steady.leave(self._state, fast)
        at = fast.next_at
        self._timer_early = False
        self._timer_when = self._timer_at = at
        if arm:
            assert self._timers is not None
            self._timer = self._timers.call_at(at, self._on_timer)

    def leave_steady_path(self) -> None:
        """Back to the Python machine for good (until its next step finds it steady
        again): someone watches every output now."""
        if self._fast is not None:
            self._leave_fast()

    def _try_fast(self) -> None:
        # after a step of the Python machine: can the C path carry on? Only on a
        # socket of the loop's GuestIO (the engine reads it in its pass) with
        # nothing buffered to write (the engine's challenges must not overtake it)
        transport = self.transport
        if self.hooks.steady and steady.AVAILABLE and self.sg_state is None \
                and steady.eligible(self._state) and not self.hooks.observed \
                and self._timer is not None and not self._timer_early \
                and self._action is None and self._asking is None \
                and self.decoder.idle and not self._write_paused and self._fd >= 0 \
                and isinstance(transport, guestio.GuestTransport) \
                and transport.is_reading() and not transport.get_write_buffer_size():
            fast = steady.enter(self._state)
            engine = self._engine = steadyloop.for_loop(READ_SIZE)
            self._timer.cancel()  # the engine keeps the timer now
            self._timer = None
            self._timer_when = self._timer_at = None
            engine.add(self, fast, self._fd)
            self._fast = fast

    # -- handed back by the engine (compute/steadyloop.py) --------------------------------
    def off_engine(self) -> None:
        """The engine's read pass met something else on this socket: the
        transport serves the event next, to the Python machine."""
        if self._fast is not None:
            self._leave_fast()

    def engine_handback(self, kind: int, payload: Any) -> None:
        """The engine's timer pass met something else: the Python machine's
        tick, input that is not the expected answer, bytes the socket did not
        take, or an error of ours."""
        if self._fast is None:
            return
        if kind == steadyloop.TICK:
            self._leave_fast(arm=False)
            self._timer = None
            self._on_timer()  # due at _timer_at, as the engine's timer was
            return
        self._leave_fast()  # the timer back on the wheel: the tick follows what was read
        transport = self.transport
        if kind == steadyloop.READ:
            if isinstance(transport, guestio.GuestTransport):
                transport.feed_read(payload)
        elif kind == steadyloop.WRITE:
            if transport is not None and not transport.is_closing():
                transport.write(payload)  # buffers it, or fails the channel
        else:
            self._internal_error("timer", payload)

    # -- asyncio protocol callbacks ------------------------------------------------
    def _on_connected(self) -> None:
        self.decoder = codec.line_decoder(self._max_msg)
        self._timers = timers.for_loop()
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        self.peer_pid = cpusample.peer_pid(sock)
        self._fd = sock.fileno() if sock is not None else -1
        self._feed(host.Connected())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fd = -1  # closed: the number may soon name another guest's socket
        self._cancel_timer()
        self._reads.cancel()
        if self.closing:
            return
        try:
            now = time.monotonic()
            for err in self.decoder.close():
                self._step(host.Malformed(err.reason), now)
            self._step(host.Disconnected(), now)
        except Exception:
            self._internal_error("disconnect")
        self._closed()

    # -- input -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._fast is not None:  # read outside the engine's pass: the Python machine's
            try:
                self._leave_fast()
            except Exception:
                self._internal_error("reading")
                return
        super().data_received(data)

    def _on_bytes(self, data: bytes, now: float) -> None:
        for item in self.decoder.feed(data):
            if not self._messages.take(now):
                self.counters["dropped"] += 1
                self._rate_limited(now)
                continue
            if self.sg_state is not None:
                self._sg_step(sg.Malformed(item.reason) if isinstance(item, FrameError)
                              else sg.Received(item), now)
            elif isinstance(item, FrameError):
                self._step(host.Malformed(item.reason), now)
            else:
                self._step(host.Received(item), now)
            if self.transport is None:
                break

    def _rate_limited(self, now: float) -> None:
        if not self._nack_every.due(now):
            return
        state = self.state
        reg = state.registration
        # The nack's sequence number is the machine's own counter, so the guest
        # sees one sequence from us; nothing else of the state changes.
        seq = (state.sequence + 1) & hb.UINT32_MAX
        self.state = replace(state, sequence=seq)
        self._write(hb.build_nack(sequence=seq, invocation_id=reg.invocation_id if reg else 0,
                                  log_msg="rate limited: input dropped"))
        self.counters["nacks"] += 1
        LOG.warning("instance %s exceeds %s messages/s: input dropped",
                    self.uuid, self._messages.rate)

    # -- single-port: the base layer in front of the heartbeat machine -----------------
    def _sg_step(self, event: Any, now: float) -> None:
        assert self.sg_state is not None
        self.sg_state, outputs = sg.session_step(self.sg_state, event, now)
        for out in outputs:
            if isinstance(out, sg.ToHeartbeat):
                self._step(host.Received(out.msg), now)
            elif isinstance(out, sg.Send):
                self._write_raw(out.msg)
            elif isinstance(out, sg.ToController):
                if self.hooks.relay is not None:
                    self.hooks.relay(self.uuid, out)
            elif isinstance(out, sg.Violation):
                self.counters["violations"] += 1
                self._log_violation(out.reason, now)

    def deliver(self, app: dict[str, Any]) -> bool:
        """Single-port: a server-group message from the controller to the guest."""
        if self.sg_state is None or self.transport is None or self._write_paused:
            self.counters["write_dropped"] += 1
            return False
        self._sg_step(sg.Deliver(app), time.monotonic())
        return True

    # -- the machine -------------------------------------------------------------------
    def _feed(self, event: Any) -> None:
        self._step(event, time.monotonic())

    def _step(self, event: Any, now: float) -> None:
        if self._fast is not None:
            self._leave_fast()
        before = self._state.phase
        self._state, outputs, deadline = host.step(self._state, event, now)
        # A (re)registration starts a new challenge rhythm. Guests that register
        # together (agent restart, benchmark start) would all be challenged in
        # the same instant every interval; an early Tick at a random point of
        # the first interval moves each one's phase. Early, not late: the
        # machine sends the next challenge then only if the first was already
        # answered (Tick(early=True)), so no interval grows and a hang right
        # after registering is still declared within 3 intervals.
        spread = before in (host.WAITING, host.DISABLED) and self._state.phase == host.ENABLED
        on_output = self.hooks.on_output
        observed = self.hooks.observed
        for out in outputs:
            kind = type(out)
            if kind is host.Send:
                self._write(out.msg)
            elif kind is host.RoundTrip:
                self.rtt_ms.append(out.ms)
            else:
                if kind is host.Violation:
                    self.counters["violations"] += 1
                    self._log_violation(out.reason, now)
                elif kind is host.Fault:
                    self.counters["faults"] += 1
                elif kind is host.ActionResult:
                    self._action_result(out)
                on_output(self, out, now)
                continue
            if observed:  # the hot path (challenges, answers) skips the hooks unless watched
                on_output(self, out, now)
        self._arm(deadline, spread)
        if self._state.answered:
            self._try_fast()

    def _arm(self, deadline: float | None, spread: bool = False) -> None:
        timer = self._timer
        if timer is not None and not spread:
            if deadline == self._timer_when:
                return
            if self._timer_early and deadline is not None and self._timer_at is not None \
                    and self._timer_at <= deadline:
                self._timer_when = deadline  # the re-phasing tick comes first and serves it
                return
        self._cancel_timer()
        if deadline is not None:
            at = deadline
            state = self._state
            reg = state.registration
            if spread and reg is not None and state.challenged_at is not None \
                    and state.action is None:
                at = min(deadline, state.challenged_at
                         + random.random() * reg.interval_ms / 1000.0)
                self._timer_early = True
            self._timer_when = deadline
            self._timer_at = at
            if self._timers is None:
                self._timers = timers.for_loop()
            self._timer = self._timers.call_at(at, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._fast is not None:
            self._leave_fast()
        if self._timer is not None:
            self._timer.cancel()
        self._timer_early = False
        self._timer = None
        self._timer_when = None
        self._timer_at = None

    def _on_timer(self) -> None:
        due = self._timer_at
        early, self._timer_early = self._timer_early, False
        self._timer = None
        self._timer_when = None
        self._timer_at = None
        try:
            now = time.monotonic()
            lag_ms = 0.0
            if due is not None and now >= due and not early:
                lag_ms = (now - due) * 1000.0
                self.late_ms.append(lag_ms)
            # the guest's CPU counters only when a challenge is still unanswered
            # near its deadline: could it have answered?
            sample, unread = None, False
            if host.wants_sample(self._state, now):
                sample = cpusample.sample(self.peer_pid)
                unread = cpusample.unread_bytes(self._fd) > 0  # an answer not read yet?
            self._step(host.Tick(early=early, sample=sample, lag_ms=lag_ms, unread=unread,
                                 phase=due if early else None), now)
        except Exception:
            self._internal_error("timer")

    # -- output ------------------------------------------------------------------------
    def _write(self, msg: dict[str, Any]) -> None:
        if self.sg_state is not None:  # single-port: heartbeat inside the base layer
            msg = sg.wrap(msg, dest_addr=sg.ADDR_HEARTBEAT, source_addr=sg.ADDR_HEARTBEAT)
        self._write_raw(msg)

    def _log_violation(self, reason: str, now: float) -> None:
        if self._log_every.due(now):
            more = self._log_every.take_suppressed()
            LOG.warning("instance %s: %s%s", self.uuid, reason,
                        f" (+{more} more since last report)" if more else "")

    # -- votes and notices ---------------------------------------------------------------
    def notify_action(self, event_type: str, notification_type: str = "revocable",
                      timeout_ms: int | None = None) -> asyncio.Future[host.ActionResult]:
        """Asks (revocable) or tells (irrevocable) the guest about an action;
        the future gets the machine's ActionResult."""
        fut: asyncio.Future[host.ActionResult] = asyncio.get_running_loop().create_future()
        if self.closing:
            fut.set_result(host.ActionResult(event_type, notification_type, "unknown",
                                             "instance no longer served here"))
            return fut
        self._asking = fut  # a refusal comes back within this very step
        try:
            self._step(host.NotifyAction(event_type, notification_type, timeout_ms),
                       time.monotonic())
        finally:
            self._asking = None
        if not fut.done():
            self._action = fut
        return fut

    def _action_result(self, out: host.ActionResult) -> None:
        fut = self._asking
        if fut is None:
            fut, self._action = self._action, None
        if fut is not None and not fut.done():
            fut.set_result(out)

    # -- control -----------------------------------------------------------------------
    def end_action(self, why: str) -> None:
        """A pending action ends now as "unknown" (we stop asking)."""
        fut, self._action = self._action, None
        if fut is not None and not fut.done():
            action = self.state.action
            fut.set_result(host.ActionResult(
                action.event_type if action else "", action.notification_type if action else "",
                "unknown", why))

    def standby(self, reason: str) -> None:
        """The host acts on the VM or knows why it goes (host.Standby): its
        silence and the channel loss that follow are no fault."""
        try:
            self._step(host.Standby(reason), time.monotonic())
        except Exception:
            self._internal_error("standing by")

    def close(self) -> None:
        """Stop without reporting anything (agent stopping or instance gone)."""
        self.end_action("instance no longer served here")
        self.closing = True
        self._cancel_timer()
        self._reads.cancel()
        if self.transport is not None:
            self.transport.abort()

    def record(self) -> dict[str, Any]:
        """This instance as the controller's `instance_state` / `hello` expect it."""
        s = self.state
        reg = s.registration
        rec = {"instance_uuid": self.uuid, "state": s.phase, "health": s.health,
               "interval_ms": reg.interval_ms if reg else None,
               "corrective_action": reg.corrective_action if reg else None,
               "name": reg.name if reg else None}
        if reg is not None:  # what bounds a vote or notice (the controller waits that long)
            rec.update(vote_secs=reg.vote_secs, shutdown_notice_secs=reg.shutdown_notice_secs,
                       suspend_notice_secs=reg.suspend_notice_secs,
                       resume_notice_secs=reg.resume_notice_secs, restart_secs=reg.restart_secs)
        return rec
