"""The VM (guest) side of the heartbeat channel.

Rules that bind this file:

- Everything that affects the guest machine lives here:
  ``step(state, event, now) -> (state, outputs, deadline)``. States are
  immutable, ``now`` is a monotonic time in seconds from the caller, and
  ``deadline`` is when the caller must feed ``Tick()`` (None = no timer).
- No I/O, no clock, no randomness: the caller picks the invocation_id and
  runs probes and event scripts; health is passed in with each ``Received``
  and a vote's outcome comes back as ``VoteResult``.
- The host is trusted less than blindly: malformed or unexpected messages
  give ``Ignored(reason)`` and never raise.
- Phases: idle -(Start)-> registering -(init_ack)-> registered;
  any -(HostGone)-> offline -(Start)-> registering; any -(Stop)-> stopped.
  Message transitions are in the table ``_ON_MESSAGE``.
- Registering resends init every ``init_retry_ms`` until init_ack. A nack
  while registered re-registers at once (while registering, the retry timer
  resends). No challenge for max(2 x interval, 5 s) -> the host
  is gone: ``HostLost`` and re-register (docs/protocol.md).
- Votes (action_notify): ``RunEventScript``; its ``VoteResult`` becomes the
  action_response. No result in time -> vote_result "timeout", which the
  host counts as accept (docs/protocol.md: no answer in time = accept).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from . import heartbeat as hb
from ._state import evolve as _evolve

IDLE = "idle"
REGISTERING = "registering"
REGISTERED = "registered"
OFFLINE = "offline"
STOPPED = "stopped"

# Part of a vote's timeout kept back so that our answer still reaches the host in time.
VOTE_MARGIN_MS = 100


@dataclass(frozen=True)
class GuestConfig:
    invocation_id: int  # pick it at random per agent start
    name: str
    interval_ms: int = 200
    corrective_action: str = "reboot"
    vote_secs: int = 8
    shutdown_notice_secs: int = 8
    suspend_notice_secs: int = 8
    resume_notice_secs: int = 13
    restart_secs: int = 600
    init_retry_ms: int = 1000
    max_pending_votes: int = 8

    @property
    def host_gone_s(self) -> float:
        return max(2 * self.interval_ms, 5000) / 1000.0


@dataclass(frozen=True)
class Health:
    healthy: bool = True
    corrective_action: str = ""  # "" = the registered corrective action
    log_msg: str = ""


HEALTHY = Health()


@dataclass(frozen=True)
class PendingVote:
    invocation_id: int
    event_type: str
    notification_type: str
    deadline: float


@dataclass(frozen=True)
class GuestState:
    config: GuestConfig
    phase: str = IDLE
    sequence: int = 0
    retry_at: Optional[float] = None  # next init resend while registering
    last_challenge_at: Optional[float] = None
    votes: Tuple[PendingVote, ...] = ()
    ignored: int = 0


# ---- events -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    """The channel is open (first time, or again after HostGone)."""


@dataclass(frozen=True)
class Received:
    msg: dict
    health: Health = HEALTHY  # current health, used to answer a challenge


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class HostGone:
    """EOF / hang-up / write error on the channel."""


@dataclass(frozen=True)
class VoteResult:
    invocation_id: int
    result: str  # one of heartbeat.VOTE_RESULTS
    log_msg: str = ""


@dataclass(frozen=True)
class Stop:
    """SIGTERM: say goodbye."""


Event = Union[Start, Received, Tick, HostGone, VoteResult, Stop]


# ---- outputs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    msg: dict


@dataclass(frozen=True)
class RunEventScript:
    invocation_id: int
    event_type: str
    notification_type: str  # "revocable" (a vote) | "irrevocable" (a notice)
    timeout_ms: int


@dataclass(frozen=True)
class Registered:
    pass


@dataclass(frozen=True)
class HostLost:
    pass


@dataclass(frozen=True)
class Ignored:
    reason: str  # for logs


Output = Union[Send, RunEventScript, Registered, HostLost, Ignored]
Result = Tuple[GuestState, List[Output]]


def initial(config: GuestConfig) -> GuestState:
    if config.corrective_action not in hb.CORRECTIVE_ACTIONS:
        raise ValueError(f"unknown corrective action {config.corrective_action!r}")
    if not 0 <= config.invocation_id <= hb.UINT32_MAX or config.interval_ms <= 0:
        raise ValueError(f"invalid GuestConfig {config!r}")
    return GuestState(config=config)


def step(state: GuestState, event: Event,
         now: float) -> Tuple[GuestState, List[Output], Optional[float]]:
    handler = _ON_EVENT.get(type(event))
    if handler is None:
        raise TypeError(f"not a guest event: {event!r}")
    new, outputs = handler(state, event, now)
    return new, outputs, _deadline(new)


def _deadline(state: GuestState) -> Optional[float]:
    times = [v.deadline for v in state.votes]
    if state.phase == REGISTERING and state.retry_at is not None:
        times.append(state.retry_at)
    elif state.phase == REGISTERED and state.last_challenge_at is not None:
        times.append(state.last_challenge_at + state.config.host_gone_s)
    return min(times) if times else None


def _send(state: GuestState, builder: Callable[..., dict],
          **fields: object) -> Tuple[GuestState, Send]:
    seq = (state.sequence + 1) & hb.UINT32_MAX
    return _evolve(state, sequence=seq), Send(builder(sequence=seq, **fields))


def _ignored(state: GuestState, reason: str) -> Result:
    return _evolve(state, ignored=state.ignored + 1), [Ignored(reason)]


def _register(state: GuestState, now: float) -> Result:
    cfg = state.config
    state, send = _send(
        state, hb.build_init, invocation_id=cfg.invocation_id, name=cfg.name,
        heartbeat_interval_ms=cfg.interval_ms, corrective_action=cfg.corrective_action,
        vote_secs=cfg.vote_secs, shutdown_notice_secs=cfg.shutdown_notice_secs,
        suspend_notice_secs=cfg.suspend_notice_secs, resume_notice_secs=cfg.resume_notice_secs,
        restart_secs=cfg.restart_secs,
    )
    state = _evolve(state, phase=REGISTERING, retry_at=now + cfg.init_retry_ms / 1000.0,
                    last_challenge_at=None)
    return state, [send]


def _vote_response(state: GuestState, vote: PendingVote, result: str,
                   log_msg: str = "") -> Tuple[GuestState, Send]:
    return _send(state, hb.build_action_response, invocation_id=vote.invocation_id,
                 event_type=vote.event_type, notification_type=vote.notification_type,
                 vote_result=result, log_msg=log_msg)


# ---- event handlers -----------------------------------------------------------------------

def _on_start(state: GuestState, event: Start, now: float) -> Result:
    if state.phase == STOPPED:
        return _ignored(state, "start after stop")
    return _register(state, now)


def _on_stop(state: GuestState, event: Stop, now: float) -> Result:
    outputs: List[Output] = []
    if state.phase in (REGISTERING, REGISTERED):
        state, send = _send(state, hb.build_exit, log_msg="guest agent stopping")
        outputs.append(send)
    return _evolve(state, phase=STOPPED, retry_at=None, votes=()), outputs


def _on_host_gone(state: GuestState, event: HostGone, now: float) -> Result:
    if state.phase in (IDLE, OFFLINE, STOPPED):
        return state, []
    was_registered = state.phase == REGISTERED
    state = _evolve(state, phase=OFFLINE, retry_at=None, last_challenge_at=None, votes=())
    return state, [HostLost()] if was_registered else []


def _on_tick(state: GuestState, event: Tick, now: float) -> Result:
    outputs: List[Output] = []
    # Votes whose script did not answer in time.
    for vote in state.votes:
        if vote.deadline <= now:
            state = _evolve(state, votes=tuple(v for v in state.votes if v is not vote))
            state, send = _vote_response(state, vote, "timeout", "event script timed out")
            outputs.append(send)
    if state.phase == REGISTERING and state.retry_at is not None and now >= state.retry_at:
        state, sends = _register(state, now)
        outputs.extend(sends)
    elif (state.phase == REGISTERED and state.last_challenge_at is not None
          and now - state.last_challenge_at >= state.config.host_gone_s):
        outputs.append(HostLost())
        state, sends = _register(state, now)
        outputs.extend(sends)
    return state, outputs


def _on_vote_result(state: GuestState, event: VoteResult, now: float) -> Result:
    for vote in state.votes:
        if vote.invocation_id == event.invocation_id:
            break
    else:
        return _ignored(state, f"vote result for {event.invocation_id} came too late")
    result = event.result if event.result in hb.VOTE_RESULTS else "error"
    state = _evolve(state, votes=tuple(v for v in state.votes if v is not vote))
    state, send = _vote_response(state, vote, result, event.log_msg)
    return state, [send]


def _on_received(state: GuestState, event: Received, now: float) -> Result:
    msg = event.msg
    error = hb.validate(msg)
    if error is not None:
        return _ignored(state, error)
    msg_type = msg["msg_type"]
    if msg_type in hb.GUEST_TO_HOST:
        return _ignored(state, f"{msg_type} is a guest-to-host message")
    handler = _ON_MESSAGE.get((state.phase, msg_type))
    if handler is None:
        return _ignored(state, f"{msg_type} unexpected while {state.phase}")
    return handler(state, event, now)


# ---- message handlers ---------------------------------------------------------------------

def _init_ack(state: GuestState, event: Received, now: float) -> Result:
    if event.msg["invocation_id"] != state.config.invocation_id:
        return _ignored(state, "init_ack for another invocation")
    state = _evolve(state, phase=REGISTERED, retry_at=None, last_challenge_at=now)
    return state, [Registered()]


def _duplicate_ack(state: GuestState, event: Received, now: float) -> Result:
    return state, []  # the answer to an init we resent: harmless


def _challenge(state: GuestState, event: Received, now: float) -> Result:
    health = event.health
    cfg = state.config
    action = health.corrective_action or cfg.corrective_action
    if action not in hb.CORRECTIVE_ACTIONS:
        action = cfg.corrective_action
    state, send = _send(
        state, hb.build_challenge_response,
        heartbeat_response=event.msg["heartbeat_challenge"],
        heartbeat_health="healthy" if health.healthy else "unhealthy",
        corrective_action=action, log_msg=health.log_msg,
    )
    if state.phase == REGISTERED:
        state = _evolve(state, last_challenge_at=now)
    return state, [send]


def _nack(state: GuestState, event: Received, now: float) -> Result:
    # The host does not know us (it restarted): register again at once.
    return _register(state, now)


def _nack_while_registering(state: GuestState, event: Received, now: float) -> Result:
    # An init is already on its way and the retry timer resends it: answering
    # every nack with an init would let a nacking host drive an init flood.
    return state, []


def _action_notify(state: GuestState, event: Received, now: float) -> Result:
    msg = event.msg
    vote = PendingVote(msg["invocation_id"], msg["event_type"], msg["notification_type"], now)
    if any(v.invocation_id == vote.invocation_id for v in state.votes):
        return _ignored(state, f"action_notify {vote.invocation_id} already pending")
    if len(state.votes) >= state.config.max_pending_votes:
        state, send = _vote_response(state, vote, "error", "too many pending votes")
        return state, [send]
    timeout_ms = max(0, msg["timeout_ms"] - VOTE_MARGIN_MS)
    vote = _evolve(vote, deadline=now + timeout_ms / 1000.0)
    state = _evolve(state, votes=state.votes + (vote,))
    return state, [RunEventScript(vote.invocation_id, vote.event_type, vote.notification_type,
                                  timeout_ms)]


_MessageHandler = Callable[[GuestState, Received, float], Result]
_ON_MESSAGE: Dict[Tuple[str, str], _MessageHandler] = {
    (REGISTERING, hb.INIT_ACK): _init_ack,
    (REGISTERED, hb.INIT_ACK): _duplicate_ack,
    (REGISTERING, hb.CHALLENGE): _challenge,
    (REGISTERED, hb.CHALLENGE): _challenge,
    (REGISTERING, hb.NACK): _nack_while_registering,
    (REGISTERED, hb.NACK): _nack,
    (REGISTERED, hb.ACTION_NOTIFY): _action_notify,
}

_ON_EVENT: Dict[type, Callable[..., Result]] = {
    Start: _on_start,
    Stop: _on_stop,
    HostGone: _on_host_gone,
    Tick: _on_tick,
    VoteResult: _on_vote_result,
    Received: _on_received,
}
