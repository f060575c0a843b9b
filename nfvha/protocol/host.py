"""The compute (host) side of one instance's heartbeat channel.

Rules that bind this file:

- Everything that affects the host machine lives here, and nothing else
  does: ``step(state, event, now) -> (state, outputs, deadline)`` is the only
  way to change a ``HostState``. States are immutable; ``now`` is a
  monotonic time in seconds passed in by the caller; ``deadline`` is when
  the caller must feed ``Tick()`` next (None = no timer).
- No I/O, no clock reads, no randomness from the OS: challenge nonces come
  from a small deterministic PRNG seeded by the caller (``initial(config,
  nonce_seed=...)``) or from ``Tick(nonce=...)``. Nonces lie in 0..2**31-1
  because the StarlingX guest client parses them as int32.
- The guest is untrusted. Any input that is malformed, unexpected in the
  current phase, replayed, late or wrong gives a ``Violation`` output and
  never satisfies the current challenge; it never raises.
- Actions (StarlingX votes and notices): ``NotifyAction`` sends
  ``action_notify`` to an enabled guest and keeps one action pending until
  the guest's matching ``action_response`` or the action's deadline, then
  gives one ``ActionResult`` (``timeout`` when the guest did not answer,
  ``unknown`` when there was no registered guest to ask or the channel
  went away). A second action while one is pending gets ``error`` at once.
- Phases: waiting -> enabled <-> failed; enabled/failed -> disabled (exit).
  Transitions on messages are in the table ``_ON_MESSAGE`` (phase, msg_type)
  -> handler; a pair missing from the table is a violation.
- A miss is a challenge not validly answered by the time the next one is
  due (one interval). ``failure_threshold`` misses in a row -> Fault
  ``heartbeat_loss`` and phase failed; challenges continue, and a valid
  answer re-enables. An unhealthy answer -> Fault ``unhealthy`` once per
  healthy->unhealthy transition, whatever its corrective action (the
  controller decides which sinks act on "none"). exit -> disabled, no
  fault. Disconnected while enabled/failed -> Fault ``channel_lost``.
- ``Standby`` (the host is about to reset, restart or destroy the VM, or the
  VM is going away for a reason the host knows) -> disabled, no fault, like
  an exit: the guest's silence and a channel loss that follow are expected.
  A new init re-enables, as after an exit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from . import heartbeat as hb
from ._state import evolve as _evolve

NONCE_MAX = 2**31 - 1

WAITING = "waiting"
ENABLED = "enabled"
DISABLED = "disabled"
FAILED = "failed"


@dataclass(frozen=True)
class HostConfig:
    min_interval_ms: int = 100
    max_interval_ms: int = 60000
    failure_threshold: int = 2  # consecutive misses -> heartbeat_loss


@dataclass(frozen=True)
class Registration:
    """The facts a guest declared in its init message (interval already clamped)."""

    invocation_id: int
    name: str
    interval_ms: int
    requested_interval_ms: int
    corrective_action: str
    vote_secs: int
    shutdown_notice_secs: int
    suspend_notice_secs: int
    resume_notice_secs: int
    restart_secs: int


@dataclass(frozen=True)
class PendingAction:
    invocation_id: int  # ours, per action; the guest echoes it (StarlingX client does)
    event_type: str
    notification_type: str  # "revocable" (a vote) | "irrevocable" (a notice)
    deadline: float


@dataclass(frozen=True)
class HostState:
    config: HostConfig
    phase: str = WAITING
    connected: bool = False
    registration: Optional[Registration] = None
    health: Optional[str] = None  # "healthy" | "unhealthy" | None (no answer yet)
    nonce: Optional[int] = None  # the current challenge
    answered: bool = True  # whether ``nonce`` got a valid response
    previous_nonce: Optional[int] = None  # the challenge before, to tell "late" from "wrong"
    challenged_at: Optional[float] = None
    deadline: Optional[float] = None
    misses: int = 0
    sequence: int = 0  # our per-sender message counter
    nonce_seed: int = 0
    rtt_ms: Optional[float] = None  # round trip of the last valid response
    violations: int = 0
    action: Optional[PendingAction] = None

    @property
    def interval_ms(self) -> Optional[int]:
        return self.registration.interval_ms if self.registration else None


# ---- events -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Connected:
    """The channel (re)connected."""


@dataclass(frozen=True)
class Received:
    msg: dict  # one decoded message (already framed)


@dataclass(frozen=True)
class Malformed:
    reason: str  # a FrameError's reason from the decoder


@dataclass(frozen=True)
class Tick:
    nonce: Optional[int] = None  # the next challenge value, if the caller picks it
    # Before the deadline a Tick does nothing, except with early=True once the
    # current challenge is answered: then the next challenge goes out now.
    # That moves the rhythm's phase (the caller spreads guests that registered
    # together) without shortening any challenge's interval, so detection
    # stays within failure_threshold + 1 intervals.
    early: bool = False


@dataclass(frozen=True)
class Disconnected:
    """The channel closed (EOF or error)."""


@dataclass(frozen=True)
class NotifyAction:
    """Ask the guest about an action (revocable: a vote) or tell it
    (irrevocable: a notice). ``timeout_ms`` None: the guest's registered
    vote_secs (revocable) or the matching notice time (irrevocable)."""

    event_type: str
    notification_type: str = "revocable"
    timeout_ms: Optional[int] = None


@dataclass(frozen=True)
class Standby:
    """The host acts on the VM (reset, restart, destroy) or knows why it goes
    away: stop challenging and expect silence; a new init re-enables."""

    reason: str = ""


Event = Union[Connected, Received, Malformed, Tick, Disconnected, NotifyAction, Standby]


# ---- outputs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    msg: dict


@dataclass(frozen=True)
class StateChanged:
    state: str  # "waiting" | "enabled" | "disabled" | "failed"
    health: Optional[str]
    interval_ms: Optional[int]
    corrective_action: Optional[str]
    name: Optional[str]
    invocation_id: Optional[int] = None
    vote_secs: Optional[int] = None
    shutdown_notice_secs: Optional[int] = None
    suspend_notice_secs: Optional[int] = None
    resume_notice_secs: Optional[int] = None
    restart_secs: Optional[int] = None


FAULT_KINDS = ("heartbeat_loss", "unhealthy", "channel_lost")


@dataclass(frozen=True)
class Fault:
    kind: str  # one of FAULT_KINDS
    corrective_action: str
    detail: str


@dataclass(frozen=True)
class Violation:
    reason: str  # bad / replayed / out-of-order input: count and log it


@dataclass(frozen=True)
class RoundTrip:
    ms: float  # challenge sent -> valid response received


@dataclass(frozen=True)
class ActionResult:
    event_type: str
    notification_type: str
    result: str  # a vote_result: accept | reject | complete | timeout | error | unknown
    log_msg: str = ""


Output = Union[Send, StateChanged, Fault, Violation, RoundTrip, ActionResult]
Result = Tuple[HostState, List[Output], Optional[float]]


def initial(config: HostConfig, nonce_seed: int = 0) -> HostState:
    """Phase "waiting". Pass a random ``nonce_seed`` per channel so guests cannot predict."""
    if config.failure_threshold < 1 or not 0 < config.min_interval_ms <= config.max_interval_ms:
        raise ValueError(f"invalid HostConfig {config!r}")
    return HostState(config=config, nonce_seed=nonce_seed & (2**64 - 1))


def step(state: HostState, event: Event, now: float) -> Result:
    handler = _ON_EVENT.get(type(event))
    if handler is None:
        raise TypeError(f"not a host event: {event!r}")
    new, outputs = handler(state, event, now)
    return new, outputs, _deadline(new)


# ---- helpers ------------------------------------------------------------------------------

def _deadline(state: HostState) -> Optional[float]:
    challenge = _challenge_deadline(state)
    if state.action is None:
        return challenge
    return state.action.deadline if challenge is None else min(challenge,
                                                                 state.action.deadline)


def _challenge_deadline(state: HostState) -> Optional[float]:
    if state.connected and state.phase in (ENABLED, FAILED):
        return state.deadline
    return None


def _end_action(state: HostState, result: str, log_msg: str) -> Tuple[HostState, List[Output]]:
    """The pending action's one result (none pending: nothing)."""
    action = state.action
    if action is None:
        return state, []
    return _evolve(state, action=None), [ActionResult(action.event_type,
                                                      action.notification_type, result,
                                                      log_msg)]


def state_changed(state: HostState) -> StateChanged:
    """The StateChanged output describing ``state`` (also handy for a full resync)."""
    reg = state.registration
    if reg is None:
        return StateChanged(state.phase, state.health, None, None, None)
    return StateChanged(
        state.phase, state.health, reg.interval_ms, reg.corrective_action, reg.name,
        invocation_id=reg.invocation_id, vote_secs=reg.vote_secs,
        shutdown_notice_secs=reg.shutdown_notice_secs,
        suspend_notice_secs=reg.suspend_notice_secs,
        resume_notice_secs=reg.resume_notice_secs, restart_secs=reg.restart_secs,
    )


def _next_nonce(seed: int) -> Tuple[int, int]:
    # 64-bit LCG (Knuth MMIX constants); the high 31 bits are the nonce.
    seed = (seed * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
    return seed, seed >> 33


def _violation(state: HostState, reason: str) -> Tuple[HostState, List[Output]]:
    return _evolve(state, violations=state.violations + 1), [Violation(reason)]


def _send(
    state: HostState, builder: Callable[..., dict], **fields: object
) -> Tuple[HostState, Send]:
    seq = (state.sequence + 1) & hb.UINT32_MAX
    return _evolve(state, sequence=seq), Send(builder(sequence=seq, **fields))


def _challenge(state: HostState, now: float, nonce: Optional[int] = None) -> Tuple[HostState, Send]:
    seed = state.nonce_seed
    if nonce is None:
        seed, nonce = _next_nonce(seed)
    nonce &= NONCE_MAX
    if nonce == state.nonce:  # never repeat: a replayed answer must not count
        nonce ^= 1
    assert state.registration is not None
    state = _evolve(
        state, nonce_seed=seed, previous_nonce=state.nonce, nonce=nonce, answered=False,
        challenged_at=now, deadline=now + state.registration.interval_ms / 1000.0,
    )
    return _send(state, hb.build_challenge, heartbeat_challenge=nonce)


# ---- event handlers -----------------------------------------------------------------------

def _on_connected(state: HostState, event: Connected, now: float) -> Tuple[HostState, List[Output]]:
    # A new channel: whoever is on the other end must register again.
    state, outputs = _end_action(state, "unknown", "heartbeat channel reconnected")
    state = _evolve(state, connected=True, phase=WAITING, registration=None, health=None,
                    nonce=None, answered=True, previous_nonce=None, deadline=None, misses=0)
    return state, outputs + [state_changed(state)]


def _on_disconnected(state: HostState, event: Disconnected,
                     now: float) -> Tuple[HostState, List[Output]]:
    was = state.phase
    state, outputs = _end_action(state, "unknown", "heartbeat channel closed")
    state = _evolve(state, connected=False, deadline=None)
    if was in (ENABLED, FAILED):
        reg = state.registration
        assert reg is not None
        outputs.append(Fault("channel_lost", reg.corrective_action, "heartbeat channel closed"))
        state = _evolve(state, phase=FAILED)
        if was != FAILED:
            outputs.append(state_changed(state))
    return state, outputs


def _on_malformed(state: HostState, event: Malformed, now: float) -> Tuple[HostState, List[Output]]:
    return _violation(state, f"malformed frame: {event.reason}")


def _on_tick(state: HostState, event: Tick, now: float) -> Tuple[HostState, List[Output]]:
    outputs: List[Output] = []
    if state.action is not None and now >= state.action.deadline:
        state, outputs = _end_action(state, "timeout", "the guest did not answer in time")
    due = _challenge_deadline(state)
    if due is None or (now < due and not (event.early and state.answered)):
        return state, outputs  # early or spurious tick: no challenge is due
    if state.answered:
        state = _evolve(state, misses=0)
    else:
        state = _evolve(state, misses=state.misses + 1)
        if state.phase == ENABLED and state.misses >= state.config.failure_threshold:
            reg = state.registration
            assert reg is not None
            state = _evolve(state, phase=FAILED)
            outputs.append(Fault(
                "heartbeat_loss", reg.corrective_action,
                f"{state.misses} consecutive challenges unanswered at {reg.interval_ms} ms",
            ))
            outputs.append(state_changed(state))
    state, send = _challenge(state, now, event.nonce)
    outputs.append(send)
    return state, outputs


def _on_received(state: HostState, event: Received, now: float) -> Tuple[HostState, List[Output]]:
    msg = event.msg
    error = hb.validate(msg)
    if error is not None:
        return _violation(state, error)
    msg_type = msg["msg_type"]
    if msg_type in hb.HOST_TO_GUEST:
        return _violation(state, f"{msg_type} is a host-to-guest message")
    if not state.connected:
        state = _evolve(state, connected=True)  # bytes prove the channel is up
    handler = _ON_MESSAGE.get((state.phase, msg_type))
    if handler is None:
        return _violation(state, f"{msg_type} unexpected while {state.phase}")
    return handler(state, msg, now)


# ---- message handlers ---------------------------------------------------------------------

def _register(state: HostState, msg: dict, now: float) -> Tuple[HostState, List[Output]]:
    cfg = state.config
    requested = msg["heartbeat_interval_ms"]
    reg = Registration(
        invocation_id=msg["invocation_id"], name=msg["name"],
        interval_ms=min(max(requested, cfg.min_interval_ms), cfg.max_interval_ms),
        requested_interval_ms=requested, corrective_action=msg["corrective_action"],
        vote_secs=msg["vote_secs"], shutdown_notice_secs=msg["shutdown_notice_secs"],
        suspend_notice_secs=msg["suspend_notice_secs"],
        resume_notice_secs=msg["resume_notice_secs"], restart_secs=msg["restart_secs"],
    )
    state, ack = _send(state, hb.build_init_ack, invocation_id=reg.invocation_id)
    if state.phase in (ENABLED, FAILED) and state.registration == reg:
        # The same init again (our init_ack was lost): acknowledge, keep the rhythm.
        return state, [ack]
    # A new registration (first one, guest reboot, agent restart): no fault;
    # an action asked of the guest before is not going to be answered.
    state, ended = _end_action(state, "unknown", "the guest registered again")
    state = _evolve(state, phase=ENABLED, registration=reg, health=None, misses=0, nonce=None,
                    previous_nonce=None, answered=True)
    state, challenge = _challenge(state, now)
    return state, [ack, *ended, state_changed(state), challenge]


def _response(state: HostState, msg: dict, now: float) -> Tuple[HostState, List[Output]]:
    value = msg["heartbeat_response"]
    if value != state.nonce:
        if value == state.previous_nonce:
            return _violation(state, "late response to a previous challenge")
        return _violation(state, "response does not echo the current challenge")
    if state.answered:
        return _violation(state, "replayed response to an answered challenge")
    if state.deadline is not None and now > state.deadline:
        # Arrived after its interval (the Tick may simply not have run yet): a miss.
        return _violation(state, "late response after the challenge deadline")
    assert state.challenged_at is not None
    rtt_ms = (now - state.challenged_at) * 1000.0
    outputs: List[Output] = [RoundTrip(rtt_ms)]
    health = msg["heartbeat_health"]
    old_phase, old_health = state.phase, state.health
    state = _evolve(state, answered=True, misses=0, rtt_ms=rtt_ms, phase=ENABLED, health=health)
    if health == "unhealthy" and old_health != "unhealthy":
        outputs.append(Fault("unhealthy", msg["corrective_action"],
                             msg["log_msg"] or "guest reports unhealthy"))
    if old_phase != state.phase or old_health != health:
        outputs.append(state_changed(state))
    return state, outputs


def _nack_unregistered(state: HostState, msg: dict, now: float) -> Tuple[HostState, List[Output]]:
    # A guest that answers before registering (our agent restarted, or it exited
    # and kept talking): nack so that it registers again at once.
    state, outputs = _violation(state, f"{msg['msg_type']} before init")
    state, nack = _send(state, hb.build_nack, invocation_id=0, log_msg="not registered")
    return state, outputs + [nack]


def _exit(state: HostState, msg: dict, now: float) -> Tuple[HostState, List[Output]]:
    state, outputs = _end_action(state, "unknown", "the guest agent exited")
    state = _evolve(state, phase=DISABLED, deadline=None, nonce=None, answered=True, misses=0)
    return state, outputs + [state_changed(state)]


def _on_standby(state: HostState, event: Standby, now: float) -> Tuple[HostState, List[Output]]:
    state, outputs = _end_action(state, "unknown", event.reason or "the host acts on the VM")
    if state.phase not in (ENABLED, FAILED):
        return state, outputs  # waiting or disabled: nothing is challenged anyway
    state = _evolve(state, phase=DISABLED, deadline=None, nonce=None, answered=True, misses=0)
    return state, outputs + [state_changed(state)]


def _action_response(state: HostState, msg: dict, now: float) -> Tuple[HostState, List[Output]]:
    action = state.action
    if action is None:
        return _violation(state, "action_response with no action pending")
    if msg["invocation_id"] != action.invocation_id or msg["event_type"] != action.event_type \
            or msg["notification_type"] != action.notification_type:
        return _violation(state, "action_response does not match the pending action")
    if action.notification_type == "irrevocable" and msg["vote_result"] == "reject":
        # A notice cannot be refused: the guest only says when it is ready.
        return _end_action(state, "complete", msg["log_msg"] or "reject ignored for a notice")
    return _end_action(state, msg["vote_result"], msg["log_msg"])


# The notice time a guest registered for each irrevocable action (StarlingX);
# other actions (resize, migrations) get restart_secs.
NOTICE_FIELD = {
    "stop": "shutdown_notice_secs", "reboot": "shutdown_notice_secs",
    "suspend": "suspend_notice_secs", "pause": "suspend_notice_secs",
    "resume": "resume_notice_secs", "unpause": "resume_notice_secs",
}


def notice_field(event_type: str) -> str:
    """The registration field that bounds a notice for `event_type`."""
    return NOTICE_FIELD.get(event_type, "restart_secs")


def _on_notify_action(state: HostState, event: NotifyAction,
                      now: float) -> Tuple[HostState, List[Output]]:
    def refuse(result: str, why: str) -> Tuple[HostState, List[Output]]:
        return state, [ActionResult(event.event_type, event.notification_type, result, why)]

    if event.event_type not in hb.EVENT_TYPES:
        return refuse("error", f"unknown event type {event.event_type!r}")
    if event.notification_type not in hb.NOTIFICATION_TYPES:
        return refuse("error", f"unknown notification type {event.notification_type!r}")
    reg = state.registration
    if not state.connected or state.phase != ENABLED or reg is None:
        return refuse("unknown", f"no enabled guest to ask (heartbeat {state.phase})")
    if state.action is not None:
        return refuse("error", f"{state.action.event_type} is still pending")
    timeout_ms = event.timeout_ms
    if timeout_ms is None:
        secs = reg.vote_secs if event.notification_type == "revocable" else getattr(
            reg, notice_field(event.event_type))
        timeout_ms = max(1, secs) * 1000
    if not 0 < timeout_ms <= hb.UINT32_MAX:
        return refuse("error", f"timeout_ms out of range: {timeout_ms}")
    invocation_id = (state.sequence + 1) & hb.UINT32_MAX  # this notify's own sequence
    state, send = _send(state, hb.build_action_notify, invocation_id=invocation_id,
                        event_type=event.event_type,
                        notification_type=event.notification_type, timeout_ms=timeout_ms)
    state = _evolve(state, action=PendingAction(invocation_id, event.event_type,
                                                event.notification_type,
                                                now + timeout_ms / 1000.0))
    return state, [send]


_MessageHandler = Callable[[HostState, dict, float], Tuple[HostState, List[Output]]]
_ON_MESSAGE: Dict[Tuple[str, str], _MessageHandler] = {
    (WAITING, hb.INIT): _register,
    (ENABLED, hb.INIT): _register,
    (FAILED, hb.INIT): _register,
    (DISABLED, hb.INIT): _register,
    (ENABLED, hb.CHALLENGE_RESPONSE): _response,
    (FAILED, hb.CHALLENGE_RESPONSE): _response,
    (WAITING, hb.CHALLENGE_RESPONSE): _nack_unregistered,
    (DISABLED, hb.CHALLENGE_RESPONSE): _nack_unregistered,
    (ENABLED, hb.EXIT): _exit,
    (FAILED, hb.EXIT): _exit,
    (ENABLED, hb.ACTION_RESPONSE): _action_response,
    (FAILED, hb.ACTION_RESPONSE): _action_response,
}

_ON_EVENT: Dict[type, Callable[..., Tuple[HostState, List[Output]]]] = {
    Connected: _on_connected,
    Disconnected: _on_disconnected,
    Malformed: _on_malformed,
    Tick: _on_tick,
    Received: _on_received,
    NotifyAction: _on_notify_action,
    Standby: _on_standby,
}
