"""Server-group messaging: StarlingX base layer v2 + server-group app layer.

Rules that bind this file (the wire format is specified in docs/protocol.md):

- Base layer: ``{"version": 2, "source_addr", "dest_addr", "data": {...}}``.
  The address names the application on each side: ``cgcs.server_grp`` for
  server-group messaging, ``cgcs.heartbeat`` for heartbeat messages when both
  share one port (the OPNFV single-port mode).
- App layer (inside ``data``, ``version`` 2): broadcast, notification,
  status_query / status_response / status_response_done, nack.
- ``source_instance`` is stamped by the host, never taken from a guest: a
  guest that sends one has it stripped (and a Violation is reported).
- A broadcast's ``data`` is a string of at most 3050 UTF-8 bytes without a
  newline; anything else is refused with a nack naming ``orig_msg_type``,
  never cut.
- Receiving tolerates StarlingX's known slips: ``"version": "version"`` and a
  stray ``data`` in status_response_done.
- Pure functions and immutable states, no I/O, no clock reads (``now`` is an
  argument), standard library only, Python 3.8 syntax.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple, Union

VERSION = 2
ADDR_SERVER_GROUP = "cgcs.server_grp"
ADDR_HEARTBEAT = "cgcs.heartbeat"
MAX_DATA = 3050  # bytes of a broadcast's data string (UTF-8)
MAX_MSG = 4096  # StarlingX's buffer for one base-layer message
MAX_SEQ = 2**31 - 1  # StarlingX guests keep seq in a C int
MAX_LOG_MSG = 224
MAX_TYPE_ECHO = 32  # orig_msg_type echoed in a nack is cut to this (it is ours, not data)
MAX_STATUS_MEMBERS = 1000  # members accepted per status answer (bounds guest memory)

BROADCAST = "broadcast"
NOTIFICATION = "notification"
STATUS_QUERY = "status_query"
STATUS_RESPONSE = "status_response"
STATUS_RESPONSE_DONE = "status_response_done"
NACK = "nack"
UNKNOWN = "unknown"

GUEST_TO_HOST = (BROADCAST, STATUS_QUERY)
HOST_TO_GUEST = (BROADCAST, NOTIFICATION, STATUS_RESPONSE, STATUS_RESPONSE_DONE, NACK)


class ProtocolError(ValueError):
    """A message that must be refused; ``orig_msg_type`` goes into the nack."""

    def __init__(self, log_msg: str, orig_msg_type: str = UNKNOWN) -> None:
        super().__init__(log_msg)
        self.log_msg = log_msg
        self.orig_msg_type = orig_msg_type


def _version_ok(value: Any) -> bool:
    # StarlingX's Nova once sent the key name instead of the number.
    return (value == VERSION and not isinstance(value, bool)) or value == "version"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")


def is_uuid(value: Any) -> bool:
    """An instance uuid in its canonical 8-4-4-4-12 hex form (any case)."""
    # fullmatch: "$" alone would let a trailing newline through
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def check_broadcast_data(data: Any) -> Optional[str]:
    """Error text for a broadcast payload, or None when it may be sent."""
    if not isinstance(data, str):
        return "broadcast data must be a string, got " + type(data).__name__
    if "\n" in data or "\r" in data:
        return "broadcast data must not contain a newline"
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_DATA:
        return f"broadcast data is {size} bytes, the limit is {MAX_DATA}"
    return None


# --- builders -------------------------------------------------------------


def wrap(
    app: dict, dest_addr: str = ADDR_SERVER_GROUP, source_addr: str = ADDR_SERVER_GROUP
) -> dict:
    """Base-layer envelope around one app-layer message."""
    return {"version": VERSION, "source_addr": source_addr, "dest_addr": dest_addr, "data": app}


def broadcast(data: str) -> dict:
    """Guest → host broadcast (app layer). Raises ProtocolError if invalid."""
    err = check_broadcast_data(data)
    if err:
        raise ProtocolError(err, BROADCAST)
    return {"version": VERSION, "msg_type": BROADCAST, "data": data}


def broadcast_to_guest(data: str, source_instance: str) -> dict:
    return {
        "version": VERSION,
        "msg_type": BROADCAST,
        "source_instance": source_instance,
        "data": data,
    }


def notification(data: dict) -> dict:
    """``data`` is the Nova-style ``{payload, event_type, priority, timestamp}``."""
    return {"version": VERSION, "msg_type": NOTIFICATION, "data": data}


def status_query(seq: int) -> dict:
    return {"version": VERSION, "msg_type": STATUS_QUERY, "seq": seq}


def status_response(seq: int, data: dict) -> dict:
    return {"version": VERSION, "msg_type": STATUS_RESPONSE, "seq": seq, "data": data}


def status_response_done(seq: int) -> dict:
    return {"version": VERSION, "msg_type": STATUS_RESPONSE_DONE, "seq": seq}


def status_answer(seq: int, members: List[dict]) -> List[dict]:
    """The whole answer to one status_query: one status_response per member,
    then status_response_done (what the compute agent delivers, in order)."""
    return [status_response(seq, m) for m in members] + [status_response_done(seq)]


def nack(orig_msg_type: str, log_msg: str) -> dict:
    return {
        "version": VERSION,
        "msg_type": NACK,
        "orig_msg_type": orig_msg_type[:MAX_TYPE_ECHO],
        "log_msg": log_msg[:MAX_LOG_MSG],
    }


def encoded_size(msg: dict) -> int:
    """Bytes of ``msg`` on the wire without the framing newlines."""
    return len(json.dumps(msg, separators=(",", ":")).encode("ascii"))


# --- parsing --------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    source_addr: Optional[str]
    dest_addr: str
    data: dict
    spoofed: bool = False  # the sender put a source_instance into the message


def _msg_type_of(data: Any) -> str:
    if isinstance(data, dict):
        t = data.get("msg_type")
        if isinstance(t, str) and t:
            return t
    return UNKNOWN


def unwrap(
    msg: dict,
    allowed_dest: Tuple[str, ...] = (ADDR_SERVER_GROUP,),
    strip_source_instance: bool = True,
) -> Envelope:
    """Base-layer envelope → Envelope; ProtocolError if it is not one.

    A missing dest_addr means server-group (StarlingX's host side never read it).
    The host side strips a guest's ``source_instance``; the guest side keeps
    the one the host stamped (``strip_source_instance=False``).
    """
    if not isinstance(msg, dict):
        raise ProtocolError("message is not a JSON object")
    data = msg.get("data")
    orig = _msg_type_of(data)
    if not _version_ok(msg.get("version")):
        raise ProtocolError(f"base layer version must be {VERSION}", orig)
    dest = msg.get("dest_addr", ADDR_SERVER_GROUP)
    if not isinstance(dest, str) or dest not in allowed_dest:
        raise ProtocolError("unknown dest_addr", orig)
    src = msg.get("source_addr")
    if src is not None and not isinstance(src, str):
        raise ProtocolError("source_addr must be a string", orig)
    if not isinstance(data, dict):
        raise ProtocolError("no valid data found in the message", orig)
    spoofed = "source_instance" in msg or (
        dest == ADDR_SERVER_GROUP and "source_instance" in data
    )
    if spoofed and strip_source_instance and dest == ADDR_SERVER_GROUP:
        data = {k: v for k, v in data.items() if k != "source_instance"}
    return Envelope(src, dest, data, spoofed)


@dataclass(frozen=True)
class GuestBroadcast:
    data: str


@dataclass(frozen=True)
class GuestStatusQuery:
    seq: int


GuestRequest = Union[GuestBroadcast, GuestStatusQuery]


def parse_guest_app(data: dict) -> GuestRequest:
    """Validate one app-layer message a guest sent; ProtocolError if refused."""
    mtype = _msg_type_of(data)
    if not _version_ok(data.get("version")):
        raise ProtocolError(f"server group message version must be {VERSION}", mtype)
    if mtype == BROADCAST:
        err = check_broadcast_data(data.get("data"))
        if err:
            raise ProtocolError(err, BROADCAST)
        return GuestBroadcast(data["data"])
    if mtype == STATUS_QUERY:
        seq = data.get("seq")
        if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
            raise ProtocolError(f"status_query seq must be an integer 0..{MAX_SEQ}", mtype)
        return GuestStatusQuery(seq)
    raise ProtocolError("invalid server group message type", mtype)


@dataclass(frozen=True)
class HostBroadcast:
    source_instance: str
    data: str


@dataclass(frozen=True)
class HostNotification:
    data: dict


@dataclass(frozen=True)
class HostStatusResponse:
    seq: int
    data: dict


@dataclass(frozen=True)
class HostStatusDone:
    seq: int


@dataclass(frozen=True)
class HostNack:
    orig_msg_type: str
    log_msg: str


HostMessage = Union[HostBroadcast, HostNotification, HostStatusResponse, HostStatusDone, HostNack]


def parse_host_app(data: dict) -> HostMessage:
    """Validate one app-layer message from the host (guest side)."""
    mtype = _msg_type_of(data)
    if not _version_ok(data.get("version")):
        raise ProtocolError(f"server group message version must be {VERSION}", mtype)
    if mtype == BROADCAST:
        src, payload = data.get("source_instance"), data.get("data")
        if not isinstance(src, str) or not isinstance(payload, str):
            raise ProtocolError("broadcast needs string source_instance and data", mtype)
        return HostBroadcast(src, payload)
    if mtype == NOTIFICATION:
        payload = data.get("data")
        if not isinstance(payload, dict):
            raise ProtocolError("notification data must be an object", mtype)
        return HostNotification(payload)
    if mtype in (STATUS_RESPONSE, STATUS_RESPONSE_DONE):
        seq = data.get("seq")
        if not _is_int(seq):
            raise ProtocolError(mtype + " seq must be an integer", mtype)
        if mtype == STATUS_RESPONSE_DONE:
            return HostStatusDone(seq)  # a stray "data" (StarlingX slip) is ignored
        payload = data.get("data")
        if not isinstance(payload, dict):
            raise ProtocolError("status_response data must be an object", mtype)
        return HostStatusResponse(seq, payload)
    if mtype == NACK:
        orig, log = data.get("orig_msg_type", UNKNOWN), data.get("log_msg", "")
        return HostNack(
            orig if isinstance(orig, str) else UNKNOWN, log if isinstance(log, str) else ""
        )
    raise ProtocolError("invalid server group message type", mtype)


# --- outputs shared by both machines ----------------------------------------


@dataclass(frozen=True)
class Send:
    msg: dict  # a base-layer message, ready for framing.encode


@dataclass(frozen=True)
class Violation:
    reason: str


# --- host side: one guest's messaging channel --------------------------------


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
class Received:
    msg: dict  # one decoded frame from the guest


@dataclass(frozen=True)
class Malformed:
    reason: str  # a framing.FrameError's reason


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
            if _version_ok(msg.get("version")) and isinstance(msg.get("data"), dict):
                return state, [ToHeartbeat(msg["data"])]
            state = replace(state, violations=state.violations + 1)
            return state, [Violation("heartbeat envelope without data object")]

    state = _refill(state, now)
    if state.tokens < 1.0:
        state = replace(state, dropped=state.dropped + 1)
        if state.throttled:
            return state, []  # already told; silent drops keep a flood cheap
        state = replace(state, throttled=True, violations=state.violations + 1)
        orig = (_msg_type_of(event.msg.get("data"))
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


# --- guest side: the client machine -------------------------------------------


@dataclass(frozen=True)
class PendingStatus:
    seq: int
    deadline: float
    members: Tuple[dict, ...] = ()


@dataclass(frozen=True)
class ClientState:
    next_seq: int = 1
    pending: Tuple[PendingStatus, ...] = ()
    source_addr: str = ADDR_SERVER_GROUP
    max_pending: int = 16


def client() -> ClientState:
    return ClientState()


# events
@dataclass(frozen=True)
class Broadcast:
    data: str


@dataclass(frozen=True)
class StatusRequest:
    timeout: float  # seconds


@dataclass(frozen=True)
class Tick:
    pass


# outputs
@dataclass(frozen=True)
class Rejected:
    """A local request refused before it reached the wire."""

    request: str
    reason: str


@dataclass(frozen=True)
class BroadcastReceived:
    source_instance: str
    data: str


@dataclass(frozen=True)
class NotificationReceived:
    data: dict


@dataclass(frozen=True)
class StatusResult:
    seq: int
    members: List[dict]
    complete: bool  # False: the deadline passed before status_response_done


@dataclass(frozen=True)
class Nacked:
    orig_msg_type: str
    log_msg: str


@dataclass(frozen=True)
class StatusStarted:
    seq: int  # lets the caller match its request to the StatusResult


ClientEvent = Union[Broadcast, StatusRequest, Received, Malformed, Tick]
ClientOutput = Union[
    Send, Rejected, BroadcastReceived, NotificationReceived, StatusResult, Nacked, Violation,
    StatusStarted,
]


def _deadline(state: ClientState) -> Optional[float]:
    return min((p.deadline for p in state.pending), default=None)


def _find(state: ClientState, seq: int) -> Optional[PendingStatus]:
    for p in state.pending:
        if p.seq == seq:
            return p
    return None


def client_step(
    state: ClientState, event: ClientEvent, now: float
) -> Tuple[ClientState, List[ClientOutput], Optional[float]]:
    out: List[ClientOutput] = []
    if isinstance(event, Broadcast):
        try:
            app = broadcast(event.data)
        except ProtocolError as exc:
            out.append(Rejected(BROADCAST, exc.log_msg))
        else:
            out.append(Send(wrap(app, source_addr=state.source_addr)))
    elif isinstance(event, StatusRequest):
        timeout = event.timeout
        if not isinstance(timeout, (int, float)) or not 0 <= timeout < float("inf"):
            # NaN would never expire (and vanish unanswered at the next expiry)
            out.append(Rejected(STATUS_QUERY, "timeout must be a finite number of seconds"))
        elif len(state.pending) >= state.max_pending:
            out.append(Rejected(STATUS_QUERY, "too many status queries outstanding"))
        else:
            seq = state.next_seq
            nxt = seq + 1 if seq < MAX_SEQ else 1
            state = replace(
                state, next_seq=nxt,
                pending=state.pending + (PendingStatus(seq, now + timeout),),
            )
            out.append(StatusStarted(seq))
            out.append(Send(wrap(status_query(seq), source_addr=state.source_addr)))
    elif isinstance(event, Malformed):
        out.append(Violation("malformed frame from host: " + event.reason))
    elif isinstance(event, Received):
        state = _client_received(state, event.msg, out)
    # Tick, and every other event: expire overdue status queries.
    expired = [p for p in state.pending if p.deadline <= now]
    if expired:
        state = replace(state, pending=tuple(p for p in state.pending if p not in expired))
        out.extend(StatusResult(p.seq, list(p.members), False) for p in expired)
    return state, out, _deadline(state)


def _client_received(state: ClientState, msg: dict, out: List[ClientOutput]) -> ClientState:
    try:
        # The host legitimately stamps source_instance on broadcasts: keep it.
        parsed = parse_host_app(unwrap(msg, strip_source_instance=False).data)
    except ProtocolError as exc:
        out.append(Violation("from host: " + exc.log_msg))
        return state
    if isinstance(parsed, HostBroadcast):
        out.append(BroadcastReceived(parsed.source_instance, parsed.data))
    elif isinstance(parsed, HostNotification):
        out.append(NotificationReceived(parsed.data))
    elif isinstance(parsed, HostNack):
        out.append(Nacked(parsed.orig_msg_type, parsed.log_msg))
        if parsed.orig_msg_type == STATUS_QUERY and state.pending:
            # The host refused a query; it cannot say which, so end the oldest now
            # rather than letting the caller wait for its timeout.
            first = state.pending[0]
            state = replace(state, pending=state.pending[1:])
            out.append(StatusResult(first.seq, list(first.members), False))
    else:
        pending = _find(state, parsed.seq)
        if pending is None:
            out.append(Violation(f"{_kind(parsed)} for unknown seq {parsed.seq}"))
            return state
        rest = tuple(p for p in state.pending if p.seq != parsed.seq)
        if isinstance(parsed, HostStatusDone):
            state = replace(state, pending=rest)
            out.append(StatusResult(parsed.seq, list(pending.members), True))
        elif len(pending.members) >= MAX_STATUS_MEMBERS:
            out.append(Violation(f"status answer exceeds {MAX_STATUS_MEMBERS} members"))
        else:
            grown = replace(pending, members=pending.members + (parsed.data,))
            state = replace(
                state, pending=tuple(grown if p.seq == parsed.seq else p for p in state.pending)
            )
    return state


def _kind(parsed: HostMessage) -> str:
    return STATUS_RESPONSE_DONE if isinstance(parsed, HostStatusDone) else STATUS_RESPONSE

