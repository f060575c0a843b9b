"""Server-group host side: the per-guest session machine of the compute agent.

One SessionState per guest channel. ``session_step`` checks what the guest
sends (sgwire's parsers), stamps ``source_instance``, rate-limits (one token
bucket for all messages, a tighter one for status queries) and nacks what it
refuses; messages for the guest go out through ``Deliver``. In single-port
mode heartbeat envelopes are handed on as ToHeartbeat, never charged to the
bucket. No timers: callers pass ``now``.

Pure functions and immutable states, no I/O, no clock reads, standard library
only, Python 3.8 syntax. Received, Malformed, Send and Violation are sgwire's,
re-exported so a caller needs this module alone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple, Union

from .sgwire import (
    ADDR_HEARTBEAT,
    ADDR_SERVER_GROUP,
    BROADCAST,
    STATUS_QUERY,
    UNKNOWN,
    GuestStatusQuery,
    Malformed,
    ProtocolError,
    Received,
    Send,
    Violation,
    msg_type_of,
    nack,
    parse_guest_app,
    unwrap,
    version_ok,
    wrap,
)

__all__ = [
    "SessionConfig", "SessionState", "session", "Deliver", "ToController", "ToHeartbeat",
    "SessionEvent", "SessionOutput", "session_step", "for_guest",
    "Received", "Malformed", "Send", "Violation",
]


@dataclass(frozen=True)
class SessionConfig:
    instance: str  # stamped as source_instance (StarlingX: the instance name)
    rate_per_s: float = 20.0  # sustained guest messages per second
    burst: int = 40  # bucket size
    # A status query makes the controller send one message per member, so
    # queries get their own, tighter bucket (amplification guard).
    status_rate_per_s: float = 2.0
    status_burst: int = 4
    single_port: bool = False  # OPNFV mode: heartbeat messages share the port


@dataclass(frozen=True)
class SessionState:
    config: SessionConfig
    tokens: float
    refilled_at: Optional[float] = None
    status_tokens: float = 0.0
    throttled: bool = False  # a rate-limit nack was sent; quiet until a message passes
    accepted: int = 0
    dropped: int = 0
    violations: int = 0


def session(config: SessionConfig) -> SessionState:
    return SessionState(
        config=config, tokens=float(config.burst), status_tokens=float(config.status_burst)
    )


@dataclass(frozen=True)
class Deliver:
    """An app-layer message for this guest (from the controller or heartbeat)."""

    app: dict
    dest_addr: str = ADDR_SERVER_GROUP


@dataclass(frozen=True)
class ToController:
    kind: str  # "broadcast" | "status_query"
    payload: Dict[str, Any]  # always carries the host-stamped source_instance


@dataclass(frozen=True)
class ToHeartbeat:
    msg: dict  # single-port mode: an inner heartbeat message for the heartbeat machine


SessionEvent = Union[Received, Malformed, Deliver]
SessionOutput = Union[Send, ToController, ToHeartbeat, Violation]


def _refill(state: SessionState, now: float) -> SessionState:
    cfg = state.config
    if state.refilled_at is None:
        return replace(state, refilled_at=now)
    elapsed = max(0.0, now - state.refilled_at)  # a clock step back never adds tokens
    tokens = min(float(cfg.burst), state.tokens + elapsed * cfg.rate_per_s)
    status_tokens = min(
        float(cfg.status_burst), state.status_tokens + elapsed * cfg.status_rate_per_s
    )
    return replace(
        state, tokens=tokens, status_tokens=status_tokens,
        refilled_at=max(now, state.refilled_at),
    )


def _nack_out(orig: str, log_msg: str) -> Send:
    return Send(wrap(nack(orig, log_msg)))


def session_step(
    state: SessionState, event: SessionEvent, now: float
) -> Tuple[SessionState, List[SessionOutput]]:
    """Host side of one guest's channel. No timers: the deadline is always None."""
    if isinstance(event, Deliver):
        return state, [Send(wrap(event.app, dest_addr=event.dest_addr))]

    if isinstance(event, Received) and state.config.single_port:
        # Heartbeat traffic is never charged to the bucket: a broadcast flood
        # must not starve the VM's own liveness checks.
        msg = event.msg
        if isinstance(msg, dict) and msg.get("dest_addr") == ADDR_HEARTBEAT:
            if version_ok(msg.get("version")) and isinstance(msg.get("data"), dict):
                return state, [ToHeartbeat(msg["data"])]
            state = replace(state, violations=state.violations + 1)
            return state, [Violation("heartbeat envelope without data object")]

    state = _refill(state, now)
    if state.tokens < 1.0:
        state = replace(state, dropped=state.dropped + 1)
        if state.throttled:
            return state, []  # already told; silent drops keep a flood cheap
        state = replace(state, throttled=True, violations=state.violations + 1)
        orig = (msg_type_of(event.msg.get("data"))
                if isinstance(event, Received) and isinstance(event.msg, dict) else UNKNOWN)
        return state, [
            Violation("rate limit exceeded"),
            _nack_out(orig, "rate limit exceeded, message dropped"),
        ]
    state = replace(state, tokens=state.tokens - 1.0)

    if isinstance(event, Malformed):
        state = replace(state, violations=state.violations + 1)
        return state, [
            Violation("malformed frame: " + event.reason),
            _nack_out(UNKNOWN, "malformed message: " + event.reason),
        ]

    outputs: List[SessionOutput] = []
    try:
        env = unwrap(event.msg)
        if env.spoofed:
            outputs.append(Violation("guest-supplied source_instance stripped"))
        req = parse_guest_app(env.data)
    except ProtocolError as exc:
        state = replace(state, violations=state.violations + 1 + len(outputs))
        return state, outputs + [Violation(exc.log_msg), _nack_out(exc.orig_msg_type, exc.log_msg)]

    state = replace(state, violations=state.violations + len(outputs))
    me = state.config.instance
    if isinstance(req, GuestStatusQuery):
        if state.status_tokens < 1.0:
            # Always nacked (never silent): the guest's client ends its query at once.
            state = replace(state, dropped=state.dropped + 1, violations=state.violations + 1)
            log = "status query rate limit exceeded"
            return state, outputs + [Violation(log), _nack_out(STATUS_QUERY, log)]
        state = replace(state, status_tokens=state.status_tokens - 1.0)
        outputs.append(ToController(STATUS_QUERY, {"source_instance": me, "seq": req.seq}))
    else:
        outputs.append(ToController(BROADCAST, {"source_instance": me, "data": req.data}))
    state = replace(state, accepted=state.accepted + 1, throttled=False)
    return state, outputs


def for_guest(app: dict, dest_addr: str = ADDR_SERVER_GROUP) -> dict:
    """Base-layer message for a guest (shortcut for ``session_step(.., Deliver(app))``)."""
    return wrap(app, dest_addr=dest_addr)
