"""Server-group wire messages: StarlingX base layer v2 and the server-group app layer.

Builders, parsers and validators for both sides, plus the frame-level inputs
and outputs the two machines share (``sgsession`` on the host, ``sgclient``
in the guest). The wire format is specified in docs/protocol.md:

- Base layer: ``{"version": 2, "source_addr", "dest_addr", "data": {...}}``.
  The address names the application on each side: ``cgcs.server_grp`` for
  server-group messaging, ``cgcs.heartbeat`` for heartbeat messages when both
  share one port (the OPNFV single-port mode).
- App layer (inside ``data``, ``version`` 2): broadcast, notification,
  status_query / status_response / status_response_done, nack.
- ``source_instance`` is stamped by the host, never taken from a guest:
  ``unwrap`` strips a guest's and marks the envelope ``spoofed``.
- A broadcast's ``data`` is a string of at most 3050 UTF-8 bytes without a
  newline; anything else is refused (ProtocolError naming ``orig_msg_type``
  for the nack), never cut.
- Receiving tolerates StarlingX's known slips: ``"version": "version"`` and a
  stray ``data`` in status_response_done.
- Pure functions and immutable values, no I/O, standard library only,
  Python 3.8 syntax.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

__all__ = [
    "VERSION", "ADDR_SERVER_GROUP", "ADDR_HEARTBEAT", "MAX_DATA", "MAX_MSG", "MAX_SEQ",
    "MAX_LOG_MSG", "MAX_TYPE_ECHO", "MAX_STATUS_MEMBERS",
    "BROADCAST", "NOTIFICATION", "STATUS_QUERY", "STATUS_RESPONSE", "STATUS_RESPONSE_DONE",
    "NACK", "UNKNOWN", "GUEST_TO_HOST", "HOST_TO_GUEST",
    "ProtocolError", "version_ok", "is_uuid", "check_broadcast_data", "msg_type_of",
    "wrap", "broadcast", "broadcast_to_guest", "notification", "status_query",
    "status_response", "status_response_done", "status_answer", "nack", "encoded_size",
    "Envelope", "unwrap",
    "GuestBroadcast", "GuestStatusQuery", "GuestRequest", "parse_guest_app",
    "HostBroadcast", "HostNotification", "HostStatusResponse", "HostStatusDone", "HostNack",
    "HostMessage", "parse_host_app",
    "Received", "Malformed", "Send", "Violation",
]

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


def version_ok(value: Any) -> bool:
    """A ``version`` the receiver accepts (base and app layer alike)."""
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


def msg_type_of(data: Any) -> str:
    """An app-layer message's ``msg_type`` (what a nack echoes), or ``unknown``."""
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
    orig = msg_type_of(data)
    if not version_ok(msg.get("version")):
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
    mtype = msg_type_of(data)
    if not version_ok(data.get("version")):
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
    mtype = msg_type_of(data)
    if not version_ok(data.get("version")):
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


# --- frames in and out: the events and outputs both machines share ----------


@dataclass(frozen=True)
class Received:
    msg: dict  # one decoded frame from the other side


@dataclass(frozen=True)
class Malformed:
    reason: str  # a framing.FrameError's reason


@dataclass(frozen=True)
class Send:
    msg: dict  # a base-layer message, ready for framing.encode


@dataclass(frozen=True)
class Violation:
    reason: str
