"""The compute (host) side of one instance's heartbeat channel.

Rules that bind this file:

- Everything that affects the host machine lives here, and nothing else
  does: ``step(state, event, now) -> (state, outputs, deadline)`` is the only
  way to change a ``HostState``. States are immutable; ``now`` is a
  monotonic time in seconds passed in by the caller; ``deadline`` is when
  the caller must feed ``Tick()`` next (None = no timer).
- No I/O, no clock reads, no randomness from the OS: challenge nonces come
  from ``Tick(nonce=...)`` or from a keyed hash (BLAKE2b, a PRF) of a
  counter under the secret ``nonce_seed`` the caller draws from the OS
  (``initial(config, nonce_seed=...)``): a guest that watches challenges
  cannot predict the next one. Nonces lie in 0..2**31-1 because the
  StarlingX guest client parses them as int32.
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
- Detection. Challenges go out every interval, on a fixed rhythm (a late
  tick does not delay the next challenge's deadline). Each has a response
  deadline that follows the channel's measured round trip (RFC 6298's
  estimator: srtt + 4 rttvar, floored at ``min_response_ms``, capped at the
  interval; the interval until ``RTT_SAMPLES_BEFORE_ADAPTING`` answers have
  been seen; an answer that came during an extension is not learnt). A
  challenge unanswered at its response deadline is a miss;
  ``failure_threshold`` (default 1) misses in a row -> Fault
  ``heartbeat_loss`` and phase failed, so a dead guest is declared within
  one interval plus the response deadline. Challenges continue; an answer
  to the current challenge is proof of life even after its deadline, and
  ``reenable_after`` answers in a row re-enable (a guest that answers
  every other challenge gives one fault, not one per challenge).
- Starvation. Before a miss is declared the machine asks whether the guest
  could have answered: ``wants_sample(state, now)`` tells the caller to
  pass a ``CpuSample`` (the guest's QEMU threads' schedstat, or the host's
  CPU pressure when the guest's process is unknown) in the Tick, once a
  little before the response deadline and again at it; ``Tick.lag_ms`` is
  how late the caller itself ran. A guest waiting for a CPU at both ends of
  that window or for a fifth of it, or a caller that ran late (once), gets
  its deadline
  extended (in steps of the response deadline, at most ``max_extension_ms``
  in all) instead of a miss. A guest still held back at that bound that got
  under a quarter of a CPU over the extension is reported ``Starved`` (a
  host-side condition: no fault, no recovery), as is one that needed
  extensions ``starved_after`` challenges in a row; one that ran more, the
  caller's lateness and host-wide pressure never make ``Starved`` (a hung
  guest on a busy host is still declared, at the bound; on host-wide
  pressure alone the bound is one interval).
- An unhealthy answer -> Fault ``unhealthy`` once per
  healthy->unhealthy transition, whatever its corrective action (the
  controller decides which sinks act on "none"). exit -> disabled, no
  fault. Disconnected while enabled/failed -> Fault ``channel_lost``.
- ``Standby`` (the host is about to reset, restart or destroy the VM, or the
  VM is going away for a reason the host knows) -> disabled, no fault, like
  an exit: the guest's silence and a channel loss that follow are expected.
  A new init re-enables, as after an exit.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from . import heartbeat as hb
from ._state import evolve as _evolve

NONCE_MAX = 2**31 - 1

WAITING = "waiting"
ENABLED = "enabled"
DISABLED = "disabled"
FAILED = "failed"


# Answers seen before the response deadline adapts (until then: the interval).
RTT_SAMPLES_BEFORE_ADAPTING = 3
# The host held a guest back when it waited for a CPU at least this share of
# a window of evidence: its deadline is extended (up to max_extension_ms).
STARVED_MIN_WAIT = 0.2
# The same from the host's CPU pressure (someone waited, not necessarily the
# guest): only a host busy most of the window counts.
PRESSURE_MIN_WAIT = 0.5
# At that bound it is Starved (no fault) only if it also ran less than this
# share of the whole extension: a guest that got CPU time and still did not
# answer (a hung guest spinning on a busy host) is a miss, however late.
STARVED_MAX_RUN = 0.25
# The caller ran late by at least max(LATE_MIN_MS, this share of the response
# deadline): the answer may sit unread; one extension lets the caller read it.
LATE_SHARE = 0.5
LATE_MIN_MS = 5.0
# Input waiting unread at a deadline: look again this much later, once read.
UNREAD_STEP_MS = 1.0


@dataclass(frozen=True)
class HostConfig:
    min_interval_ms: int = 100
    max_interval_ms: int = 60000
    failure_threshold: int = 1  # misses in a row -> heartbeat_loss
    min_response_ms: int = 20  # floor of the adaptive response deadline
    max_extension_ms: int = 500  # starvation extensions of one challenge, in all
    starved_after: int = 3  # challenges in a row answered only thanks to an extension
    reenable_after: int = 2  # answers in a row that re-enable a failed guest
    clear_starved_after: int = 10  # on-time answers in a row that clear Starved


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
class CpuSample:
    """Cumulative CPU counters of whatever answers for the guest, in ns:
    its QEMU process's threads summed (``/proc/<pid>/task/*/schedstat``: time
    on a CPU, time runnable but waiting, CFS throttling included; the kernel
    adds a wait only when it ends), and whether one of them is runnable right
    now (a wait under way); or, when the guest's process is unknown, the
    host's CPU pressure (``own=False``, wait = PSI "some" total): that
    extends a deadline but never makes a guest ``Starved``."""

    run_ns: int
    wait_ns: int
    own: bool = True
    runnable: bool = False


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
    # detection within one interval (see the module docstring)
    srtt_ms: Optional[float] = None  # smoothed round trip
    rttvar_ms: float = 0.0  # its mean deviation
    rtt_count: int = 0  # answers the estimator has seen
    respond_by: Optional[float] = None  # the current challenge's response deadline
    probe_at: Optional[float] = None  # when the first CpuSample of its window is due
    judged: bool = True  # the current challenge was judged (miss / starved) unanswered
    extended_ms: float = 0.0  # extensions the current challenge got
    lag_extended: bool = False  # one of them for the caller's own lateness
    baseline: Optional[Tuple[float, CpuSample]] = None  # (when, sample) opening a window
    origin: Optional[Tuple[float, CpuSample]] = None  # the first window's, while extended
    extended_streak: int = 0  # challenges in a row answered only thanks to an extension
    ontime_streak: int = 0  # answers in a row within the response deadline
    streak: int = 0  # valid answers in a row
    starved: bool = False
    nonce_counter: int = 0

    @property
    def interval_ms(self) -> Optional[int]:
        return self.registration.interval_ms if self.registration else None


# ---- events -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Connected:
    """The channel (re)connected."""


# The events and outputs every challenge and answer make (Tick, Received,
# Send, RoundTrip) set their fields through __dict__: as frozen, equal and
# hashable as the generated __init__ makes them, at a third of its cost
# (which sets each field through object.__setattr__).

@dataclass(frozen=True, init=False)
class Received:
    msg: dict  # one decoded message (already framed)

    def __init__(self, msg: dict) -> None:
        self.__dict__["msg"] = msg


@dataclass(frozen=True)
class Malformed:
    reason: str  # a FrameError's reason from the decoder


@dataclass(frozen=True, init=False)
class Tick:
    nonce: Optional[int] = None  # the next challenge value, if the caller picks it
    sample: Optional[CpuSample] = None  # when wants_sample() said so
    lag_ms: float = 0.0  # how late the caller runs this Tick (its loop lag)
    unread: bool = False  # the channel holds bytes the caller has not read yet
    # Before the deadline a Tick does nothing, except with early=True once the
    # current challenge is answered: then the next challenge goes out now.
    # That moves the rhythm's phase (the caller spreads guests that registered
    # together) without shortening any challenge's interval, so detection
    # stays within failure_threshold + 1 intervals.
    early: bool = False
    # With early=True: the instant the new rhythm starts from, if not now (the
    # time the caller picked for this tick): guests re-phased together by one
    # late wake-up of the caller must not end up sharing a phase.
    phase: Optional[float] = None

    def __init__(self, nonce: Optional[int] = None, sample: Optional[CpuSample] = None,
                 lag_ms: float = 0.0, unread: bool = False, early: bool = False,
                 phase: Optional[float] = None) -> None:
        d = self.__dict__
        d["phase"] = phase
        d["nonce"] = nonce
        d["sample"] = sample
        d["lag_ms"] = lag_ms
        d["unread"] = unread
        d["early"] = early


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

@dataclass(frozen=True, init=False)
class Send:
    msg: dict

    def __init__(self, msg: dict) -> None:
        self.__dict__["msg"] = msg


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


@dataclass(frozen=True, init=False)
class RoundTrip:
    ms: float  # challenge sent -> valid response received

    def __init__(self, ms: float) -> None:
        self.__dict__["ms"] = ms


@dataclass(frozen=True)
class Starved:
    """A host-side condition, not a VM fault: the guest could not answer in
    time because it got no CPU (active), or it answers on time again."""

    active: bool
    detail: str


@dataclass(frozen=True)
class ActionResult:
    event_type: str
    notification_type: str
    result: str  # a vote_result: accept | reject | complete | timeout | error | unknown
    log_msg: str = ""


Output = Union[Send, StateChanged, Fault, Violation, RoundTrip, ActionResult, Starved]
Result = Tuple[HostState, List[Output], Optional[float]]


def initial(config: HostConfig, nonce_seed: int = 0) -> HostState:
    """Phase "waiting". Pass a random ``nonce_seed`` per channel so guests cannot predict."""
    if config.failure_threshold < 1 or not 0 < config.min_interval_ms <= config.max_interval_ms \
            or config.min_response_ms < 1 or config.max_extension_ms < 0 \
            or config.starved_after < 1 or config.reenable_after < 1 \
            or config.clear_starved_after < 1:
        raise ValueError(f"invalid HostConfig {config!r}")
    return HostState(config=config, nonce_seed=nonce_seed & (2**256 - 1))


def step(state: HostState, event: Event, now: float) -> Result:
    handler = _ON_EVENT.get(type(event))
    if handler is None:
        raise TypeError(f"not a host event: {event!r}")
    new, outputs = handler(state, event, now)
    return new, outputs, _deadline(new)


# ---- helpers ------------------------------------------------------------------------------

def _deadline(state: HostState) -> Optional[float]:
    # (one function, not two: it runs after every step of every channel)
    challenge: Optional[float]
    if not state.connected or state.phase not in (ENABLED, FAILED):
        challenge = None
    elif not state.answered and not state.judged and state.respond_by is not None:
        # the current challenge is judged first; the next one waits for that
        challenge = state.respond_by if state.probe_at is None \
            else min(state.probe_at, state.respond_by)
    else:
        challenge = state.deadline
    action = state.action
    if action is None:
        return challenge
    return action.deadline if challenge is None else min(challenge, action.deadline)


def wants_sample(state: HostState, now: float) -> bool:
    """Whether a Tick at ``now`` should carry a CpuSample: the current
    challenge is unanswered and its window of evidence opens or closes now.
    Callers read the guest's CPU counters only then (a guest that answers
    within a few ms costs no reading at all)."""
    if not state.connected or state.phase not in (ENABLED, FAILED) or state.answered \
            or state.judged or state.respond_by is None:
        return False
    return now >= (state.probe_at if state.probe_at is not None else state.respond_by)


def response_timeout_ms(state: HostState) -> Optional[float]:
    """The response deadline the next challenge gets (None: not registered)."""
    return _rto_ms(state) if state.registration is not None else None


def _rto_ms(state: HostState) -> float:
    reg = state.registration
    assert reg is not None
    interval = float(reg.interval_ms)
    if state.srtt_ms is None or state.rtt_count < RTT_SAMPLES_BEFORE_ADAPTING:
        return interval
    rto = state.srtt_ms + max(1.0, 4.0 * state.rttvar_ms)
    return min(max(rto, float(state.config.min_response_ms)), interval)


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


# The keyed hash of each seed, before any input: copying one costs half of
# keying a new one (the key fills a whole first block). A pure cache: the same
# nonces; bounded, since a seed lives as long as its channel's state.
_KEYED: Dict[int, hashlib._Hash] = {}
_KEYED_MAX = 4096
# One 64-byte digest holds the nonces of 16 consecutive counters; the last
# block of each seed is kept (pure, bounded like _KEYED), so 15 of every 16
# challenges cost a slice instead of a hash.
_PER_BLOCK = 16
_BLOCKS: Dict[int, Tuple[int, bytes]] = {}


def _prf_nonce(seed: int, counter: int) -> int:
    # A keyed hash of a counter: unpredictable without the seed, unlike any
    # PRNG whose state a guest could rebuild from the challenges it sees.
    block, slot = divmod(counter, _PER_BLOCK)
    cached = _BLOCKS.get(seed)
    digest = cached[1] if cached is not None and cached[0] == block else prf_block(seed, block)
    i = 4 * slot
    return int.from_bytes(digest[i:i + 4], "big") & NONCE_MAX


def prf_block(seed: int, block: int) -> bytes:
    """The 64-byte digest holding the nonces of counters 16*block .. 16*block+15
    (4 bytes each, big-endian, masked with NONCE_MAX); the compute agent's
    steady path (compute/steady.py) reads its nonces from here too."""
    keyed = _KEYED.get(seed)
    if keyed is None:
        if len(_KEYED) >= _KEYED_MAX:
            _KEYED.clear()
            _BLOCKS.clear()
        keyed = _KEYED[seed] = hashlib.blake2b(digest_size=64, key=seed.to_bytes(32, "big"))
    h = keyed.copy()
    h.update(block.to_bytes(8, "big"))
    digest = h.digest()
    _BLOCKS[seed] = (block, digest)
    return digest


def _violation(state: HostState, reason: str) -> Tuple[HostState, List[Output]]:
    return _evolve(state, violations=state.violations + 1), [Violation(reason)]


def _send(
    state: HostState, builder: Callable[..., dict], **fields: object
) -> Tuple[HostState, Send]:
    seq = (state.sequence + 1) & hb.UINT32_MAX
    return _evolve(state, sequence=seq), Send(builder(sequence=seq, **fields))


def _challenge(state: HostState, now: float, nonce: Optional[int] = None,
               base: Optional[float] = None) -> Tuple[HostState, Send]:
    # base: where the interval to the next challenge starts (default: now)
    counter = state.nonce_counter
    if nonce is None:
        counter = (counter + 1) & (2**64 - 1)
        nonce = _prf_nonce(state.nonce_seed, counter)
    nonce &= NONCE_MAX
    if nonce == state.nonce:  # never repeat: a replayed answer must not count
        nonce ^= 1
    assert state.registration is not None
    rto = _rto_ms(state) / 1000.0
    seq = (state.sequence + 1) & hb.UINT32_MAX  # what _send does, in the same one copy
    state = _evolve(
        state, nonce_counter=counter, previous_nonce=state.nonce, nonce=nonce, answered=False,
        challenged_at=now,
        deadline=(now if base is None else base) + state.registration.interval_ms / 1000.0,
        judged=False, respond_by=now + rto, probe_at=now + rto - min(rto / 2.0, 0.010),
        extended_ms=0.0, lag_extended=False, baseline=None, origin=None, sequence=seq,
    )
    return state, Send(hb.build_challenge(sequence=seq, heartbeat_challenge=nonce))


def _share(baseline: Optional[Tuple[float, CpuSample]], sample: Optional[CpuSample],
           now: float) -> Optional[Tuple[float, float, float]]:
    """(waited, ran) as shares of the window from ``baseline`` to now, and the
    window in ms; None when there is no evidence (no samples, too short a
    window, samples of different sources)."""
    if baseline is None or sample is None:
        return None
    t0, first = baseline
    window_ns = (now - t0) * 1e9
    if window_ns < 1e6 or first.own != sample.own:
        return None
    return ((sample.wait_ns - first.wait_ns) / window_ns,
            (sample.run_ns - first.run_ns) / window_ns, window_ns / 1e6)


def _judge(state: HostState, event: Tick, now: float) -> Tuple[HostState, List[Output]]:
    """The current challenge is unanswered at its response deadline: extend
    it (the guest or we could not run), report Starved, or count a miss."""
    assert state.registration is not None and state.respond_by is not None
    rto = _rto_ms(state)
    sample = event.sample
    lag = max(event.lag_ms, (now - state.respond_by) * 1000.0)
    # We ran late, or too late to open a window of evidence: once per challenge.
    # Bytes waiting unread (the answer may be among them): every time.
    late = (lag >= max(LATE_MIN_MS, LATE_SHARE * rto)
            or (state.baseline is None and sample is not None)) and not state.lag_extended
    late = late or event.unread
    last = _share(state.baseline, sample, now)
    # the host held it back: it did for part of the window, or it is waiting
    # for a CPU now and was when the window opened (one instant alone is noise:
    # an idle VM's threads wake for timers)
    opened = state.baseline[1] if state.baseline is not None else None
    least = STARVED_MIN_WAIT if sample is None or sample.own else PRESSURE_MIN_WAIT
    waited = (last is not None and last[0] >= least) or (
        sample is not None and sample.runnable and opened is not None and opened.runnable)
    bound = float(state.config.max_extension_ms)
    if sample is not None and not sample.own:
        # Only the host's pressure is known, not the guest's: as much slack as
        # a second missed challenge would give, no more.
        bound = min(bound, float(state.registration.interval_ms))
    room = bound - state.extended_ms
    origin = state.origin
    if origin is None:  # where the first window of this challenge opened
        origin = state.baseline if state.baseline is not None else (
            (now, sample) if sample is not None else None)
    if (late or waited) and room > 0:
        step = min(rto, room) if not event.unread else min(UNREAD_STEP_MS, room)
        return _evolve(
            state, respond_by=now + step / 1000.0, probe_at=None, origin=origin,
            extended_ms=state.extended_ms + step,
            lag_extended=state.lag_extended or (late and not event.unread),
            baseline=(now, sample) if sample is not None else None,
        ), []
    reg = state.registration
    seen = "" if last is None else (f"; in the last {last[2]:.0f} ms the guest waited for a "
                                    f"CPU {last[0]:.0%} and ran {last[1]:.0%} of the time")
    whole = _share(origin, sample, now)
    if waited and sample is not None and sample.own and whole is not None \
            and whole[1] < STARVED_MAX_RUN:
        # held back to the bound and it barely ran: the host's doing, not a VM fault
        state = _evolve(state, judged=True, baseline=None, origin=None, ontime_streak=0)
        if state.starved:
            return state, []
        return _evolve(state, starved=True), [Starved(True, (
            f"the guest got {whole[1]:.0%} of a CPU over {whole[2]:.0f} ms and waited for "
            f"one {whole[0]:.0%} of it: its challenge went unanswered"))]
    state = _evolve(state, judged=True, baseline=None, origin=None, misses=state.misses + 1,
                    streak=0, ontime_streak=0)
    if state.phase == ENABLED and state.misses >= state.config.failure_threshold:
        state = _evolve(state, phase=FAILED)
        extended = f" +{state.extended_ms:.0f} ms extended" if state.extended_ms else ""
        return state, [Fault(
            "heartbeat_loss", reg.corrective_action,
            f"{state.misses} challenge(s) unanswered within {rto:.0f} ms{extended} at "
            f"{reg.interval_ms} ms interval (agent lag {lag:.0f} ms{seen})"),
            state_changed(state)]
    return state, []


# ---- event handlers -----------------------------------------------------------------------

def _on_connected(state: HostState, event: Connected, now: float) -> Tuple[HostState, List[Output]]:
    # A new channel: whoever is on the other end must register again.
    state, outputs = _end_action(state, "unknown", "heartbeat channel reconnected")
    state = _evolve(state, connected=True, phase=WAITING, registration=None, health=None,
                    nonce=None, answered=True, previous_nonce=None, deadline=None, misses=0,
                    judged=True, respond_by=None, probe_at=None, baseline=None)
    return state, outputs + [state_changed(state)]


def _on_disconnected(state: HostState, event: Disconnected,
                     now: float) -> Tuple[HostState, List[Output]]:
    was = state.phase
    state, outputs = _end_action(state, "unknown", "heartbeat channel closed")
    state = _evolve(state, connected=False, deadline=None, judged=True, respond_by=None,
                    probe_at=None, baseline=None)
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
    if not state.connected or state.phase not in (ENABLED, FAILED) or state.deadline is None:
        return state, outputs
    if not state.answered and not state.judged and state.respond_by is not None:
        if now < state.respond_by:
            if state.probe_at is not None and now >= state.probe_at:
                # the window of evidence opens: is the guest getting a CPU?
                state = _evolve(state, probe_at=None, baseline=(
                    (now, event.sample) if event.sample is not None else None))
            return state, outputs
        state, judged = _judge(state, event, now)
        outputs += judged
        if not state.judged:
            return state, outputs  # extended: the next challenge waits
    if now < state.deadline and not (event.early and state.answered):
        return state, outputs  # early or spurious tick: no challenge is due
    # The next challenge keeps this one's place in the rhythm (its deadline,
    # not the moment the caller got to it): a caller running late does not
    # move the guest's phase, so guests whose challenges left in one late
    # batch do not stay bunched together for ever. An interval or more
    # late: the rhythm starts again from now; an early (re-phasing) tick:
    # from the phase it names (not after now), else now.
    due = state.deadline
    assert state.registration is not None
    if event.early:
        base = now if event.phase is None or event.phase > now else event.phase
    elif now < due + state.registration.interval_ms / 1000.0:
        base = due
    else:
        base = now
    state, send = _challenge(state, now, event.nonce, base)
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
        if state.phase in (ENABLED, FAILED):
            # a session that lived on: challenge again at once, or it would
            # stay "connected" with no deadline and never challenge again
            state = _evolve(state, deadline=now, judged=True, respond_by=None,
                            probe_at=None, baseline=None)
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
                    previous_nonce=None, answered=True, judged=True, streak=0,
                    extended_streak=0, ontime_streak=0)
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
    assert state.challenged_at is not None
    # An answer to the current challenge is proof of life even after its
    # response deadline (a miss already counted stays counted).
    rtt_ms = (now - state.challenged_at) * 1000.0
    outputs: List[Output] = [RoundTrip(rtt_ms)]
    cfg = state.config
    ontime = not state.judged and state.extended_ms == 0.0
    extended = state.extended_ms > 0.0
    srtt, rttvar, count = state.srtt_ms, state.rttvar_ms, state.rtt_count
    if not extended:
        # An answer the host held back measures the host, not the channel: the
        # deadline must not learn it (a starved guest would look normal). One
        # after a miss may span a hang: learnt as at most twice the deadline,
        # so a round trip that really grew is still followed, in a few steps.
        sample = rtt_ms if not state.judged else min(rtt_ms, 2.0 * _rto_ms(state))
        if srtt is None:
            srtt, rttvar = sample, sample / 2.0
        else:  # RFC 6298, 2.3
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - sample)
            srtt = 0.875 * srtt + 0.125 * sample
        count += 1
    streak = state.streak + 1
    extended_streak = state.extended_streak + 1 if extended else 0
    ontime_streak = state.ontime_streak + 1 if ontime else 0
    starved = state.starved
    if not starved and extended_streak >= cfg.starved_after:
        starved = True
        outputs.append(Starved(True, f"the guest answered only after its deadline was "
                                     f"extended, {extended_streak} challenges in a row"))
    elif starved and ontime_streak >= cfg.clear_starved_after:
        starved = False
        outputs.append(Starved(False, f"{ontime_streak} answers in a row on time"))
    health = msg["heartbeat_health"]
    old_phase, old_health = state.phase, state.health
    phase = ENABLED if old_phase == ENABLED or streak >= cfg.reenable_after else FAILED
    # one copy per answer: this runs for every guest every interval
    state = _evolve(
        state, answered=True, misses=0, rtt_ms=rtt_ms, srtt_ms=srtt, rttvar_ms=rttvar,
        rtt_count=count, streak=streak, baseline=None, probe_at=None,
        extended_streak=extended_streak, ontime_streak=ontime_streak, starved=starved,
        phase=phase, health=health)
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
    state = _evolve(state, phase=DISABLED, deadline=None, nonce=None, answered=True, misses=0,
                    judged=True, respond_by=None, probe_at=None, baseline=None)
    return state, outputs + [state_changed(state)]


def _on_standby(state: HostState, event: Standby, now: float) -> Tuple[HostState, List[Output]]:
    state, outputs = _end_action(state, "unknown", event.reason or "the host acts on the VM")
    if state.phase not in (ENABLED, FAILED):
        return state, outputs  # waiting or disabled: nothing is challenged anyway
    state = _evolve(state, phase=DISABLED, deadline=None, nonce=None, answered=True, misses=0,
                    judged=True, respond_by=None, probe_at=None, baseline=None)
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
