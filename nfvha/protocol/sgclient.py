"""Server-group guest side: the client machine behind nfvha.guest's GroupClient.

``client_step`` turns local requests (Broadcast, StatusRequest) into base-layer
messages, reads what the host sends (sgwire's parsers, keeping the
host-stamped ``source_instance``), gathers each status query's members until
status_response_done, and ends overdue queries on any event (Tick when idle);
it returns the next deadline alongside the outputs.

Pure functions and immutable states, no I/O, no clock reads (``now`` is an
argument), standard library only, Python 3.8 syntax: it ships in the guest
zipapp. Received, Malformed, Send and Violation are sgwire's, re-exported so
a caller needs this module alone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Tuple, Union

from .sgwire import (
    ADDR_SERVER_GROUP,
    BROADCAST,
    MAX_SEQ,
    MAX_STATUS_MEMBERS,
    STATUS_QUERY,
    STATUS_RESPONSE,
    STATUS_RESPONSE_DONE,
    HostBroadcast,
    HostMessage,
    HostNack,
    HostNotification,
    HostStatusDone,
    Malformed,
    ProtocolError,
    Received,
    Send,
    Violation,
    broadcast,
    parse_host_app,
    status_query,
    unwrap,
    wrap,
)

__all__ = [
    "PendingStatus", "ClientState", "client",
    "Broadcast", "StatusRequest", "Tick",
    "Rejected", "BroadcastReceived", "NotificationReceived", "StatusResult", "Nacked",
    "StatusStarted", "ClientEvent", "ClientOutput", "client_step",
    "Received", "Malformed", "Send", "Violation",
]


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

