"""StarlingX guest heartbeat messages, version 3 revision 1 (docs/protocol.md).

Rules that bind this file:

- Everything about the *shape* of a heartbeat message lives here: names,
  field types, length limits, allowed values. What a message *means* in a
  given state lives in host.py and guest.py.
- ``validate`` never raises on untrusted input; it returns an error text.
- Builders always produce messages that ``validate`` accepts: free-text
  fields are cut to their byte limit on a UTF-8 boundary.
- No I/O, standard library only, Python 3.8 syntax.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

VERSION = 3
REVISION = 1
MAX_MSG = 1056  # bytes of one encoded message, StarlingX limit

INIT = "init"
INIT_ACK = "init_ack"
CHALLENGE = "challenge"
CHALLENGE_RESPONSE = "challenge_response"
EXIT = "exit"
ACTION_NOTIFY = "action_notify"
ACTION_RESPONSE = "action_response"
NACK = "nack"
MSG_TYPES = (
    INIT, INIT_ACK, CHALLENGE, CHALLENGE_RESPONSE, EXIT, ACTION_NOTIFY, ACTION_RESPONSE, NACK,
)
GUEST_TO_HOST = frozenset((INIT, CHALLENGE_RESPONSE, EXIT, ACTION_RESPONSE))
HOST_TO_GUEST = frozenset((INIT_ACK, CHALLENGE, ACTION_NOTIFY, NACK))

CORRECTIVE_ACTIONS = ("none", "reboot", "stop", "log", "unknown")
HEALTH_VALUES = ("healthy", "unhealthy")
NOTIFICATION_TYPES = ("revocable", "irrevocable")
EVENT_TYPES = (
    "stop", "reboot", "suspend", "pause", "unpause", "resume", "resize_begin", "resize_end",
    "live_migrate_begin", "live_migrate_end", "cold_migrate_begin", "cold_migrate_end",
)
VOTE_RESULTS = ("accept", "reject", "complete", "timeout", "error", "unknown")

STR_MAX = 32
NAME_MAX = 64
LOG_MSG_MAX = 224
UINT32_MAX = 2**32 - 1

# Field kinds: "int" = unsigned 32-bit integer; ("str", max_bytes, allowed or None).
_INT = ("int",)


def _str(limit: int = STR_MAX, allowed: Optional[Tuple[str, ...]] = None) -> tuple:
    return ("str", limit, allowed)


_COMMON: Dict[str, tuple] = {"version": _INT, "revision": _INT, "sequence": _INT}
FIELDS: Dict[str, Dict[str, tuple]] = {
    INIT: {
        "invocation_id": _INT,
        "name": _str(NAME_MAX),
        "heartbeat_interval_ms": _INT,
        "vote_secs": _INT,
        "shutdown_notice_secs": _INT,
        "suspend_notice_secs": _INT,
        "resume_notice_secs": _INT,
        "restart_secs": _INT,
        "corrective_action": _str(STR_MAX, CORRECTIVE_ACTIONS),
    },
    INIT_ACK: {"invocation_id": _INT},
    CHALLENGE: {"heartbeat_challenge": _INT},
    CHALLENGE_RESPONSE: {
        "heartbeat_response": _INT,
        "heartbeat_health": _str(STR_MAX, HEALTH_VALUES),
        "corrective_action": _str(STR_MAX, CORRECTIVE_ACTIONS),
        "log_msg": _str(LOG_MSG_MAX),
    },
    EXIT: {"log_msg": _str(LOG_MSG_MAX)},
    ACTION_NOTIFY: {
        "invocation_id": _INT,
        "event_type": _str(STR_MAX, EVENT_TYPES),
        "notification_type": _str(STR_MAX, NOTIFICATION_TYPES),
        "timeout_ms": _INT,
    },
    ACTION_RESPONSE: {
        "invocation_id": _INT,
        "event_type": _str(STR_MAX, EVENT_TYPES),
        "notification_type": _str(STR_MAX, NOTIFICATION_TYPES),
        "vote_result": _str(STR_MAX, VOTE_RESULTS),
        "log_msg": _str(LOG_MSG_MAX),
    },
    NACK: {"invocation_id": _INT, "log_msg": _str(LOG_MSG_MAX)},
}
# per type, the common fields then its own, in the order validate checks them
_ALL_FIELDS: Dict[str, Tuple[Tuple[str, tuple], ...]] = {
    t: tuple(_COMMON.items()) + tuple(f.items()) for t, f in FIELDS.items()}


def _check(name: str, kind: tuple, value: Any) -> Optional[str]:
    if kind[0] == "int":
        # bool is an int subclass in Python; JSON true is not a number.
        if type(value) is not int:
            return f"{name} must be an integer"
        if not 0 <= value <= UINT32_MAX:
            return f"{name} out of range"
        return None
    _, limit, allowed = kind
    if not isinstance(value, str):
        return f"{name} must be a string"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
        return f"{name} is not valid Unicode"
    if size > limit:
        return f"{name} longer than {limit} bytes"
    if allowed is not None and value not in allowed:
        return f"{name} has unknown value {value[:STR_MAX]!r}"
    return None


def _is_valid_response(msg: dict) -> bool:
    """A well-formed challenge_response, in one expression: every guest sends
    one per interval. False says nothing (validate's loop then words the
    error, or finds none)."""
    get = msg.get
    v, r, s, a = get("version"), get("revision"), get("sequence"), get("heartbeat_response")
    h, c, log = get("heartbeat_health"), get("corrective_action"), get("log_msg")
    return (type(v) is int and v == VERSION and type(r) is int and 0 <= r <= UINT32_MAX
            and type(s) is int and 0 <= s <= UINT32_MAX
            and type(a) is int and 0 <= a <= UINT32_MAX
            and type(h) is str and h in HEALTH_VALUES
            and type(c) is str and c in CORRECTIVE_ACTIONS
            and type(log) is str and len(log) <= LOG_MSG_MAX and log.isascii())


def validate(msg: dict) -> Optional[str]:
    """Returns an error text, or None if ``msg`` is a well-formed v3 message.

    Unknown extra fields are tolerated (a later revision may add some).
    """
    if type(msg) is dict and msg.get("msg_type") == CHALLENGE_RESPONSE \
            and _is_valid_response(msg):
        return None
    return _validate(msg)


def _validate(msg: dict) -> Optional[str]:
    # every message type, field by field (validate without its shortcut)
    if not isinstance(msg, dict):
        return "not an object"
    msg_type = msg.get("msg_type")
    if not isinstance(msg_type, str) or msg_type not in FIELDS:
        return f"unknown msg_type {str(msg_type)[:STR_MAX]!r}"
    if msg.get("version") != VERSION or type(msg.get("version")) is not int:
        return f"unsupported version {str(msg.get('version'))[:STR_MAX]!r}"
    for name, kind in _ALL_FIELDS[msg_type]:
        if name not in msg:
            return f"{msg_type}: missing {name}"
        value = msg[name]
        # The common valid cases inline (every message of every guest passes
        # here); anything else goes to _check, which words the error.
        if kind is _INT:
            if type(value) is int and 0 <= value <= UINT32_MAX:
                continue
        elif type(value) is str and value.isascii() and len(value) <= kind[1] \
                and (kind[2] is None or value in kind[2]):
            continue  # ASCII: as many UTF-8 bytes as characters
        error = _check(name, kind, value)
        if error is not None:
            return f"{msg_type}: {error}"
    return None


def truncate_utf8(text: str, limit: int) -> str:
    """Cuts ``text`` to at most ``limit`` UTF-8 bytes without splitting a
    character; a lone surrogate (not text: validate refuses it) becomes "?"."""
    raw = text.encode("utf-8", "replace")
    return raw[:limit].decode("utf-8", "ignore")


def _base(msg_type: str, sequence: int) -> Dict[str, Any]:
    return {"version": VERSION, "revision": REVISION, "msg_type": msg_type,
            "sequence": sequence & UINT32_MAX}


def build_init(*, sequence: int, invocation_id: int, name: str, heartbeat_interval_ms: int,
               corrective_action: str, vote_secs: int = 8, shutdown_notice_secs: int = 8,
               suspend_notice_secs: int = 8, resume_notice_secs: int = 13,
               restart_secs: int = 600) -> Dict[str, Any]:
    msg = _base(INIT, sequence)
    msg.update(
        invocation_id=invocation_id, name=truncate_utf8(name, NAME_MAX),
        heartbeat_interval_ms=heartbeat_interval_ms, vote_secs=vote_secs,
        shutdown_notice_secs=shutdown_notice_secs, suspend_notice_secs=suspend_notice_secs,
        resume_notice_secs=resume_notice_secs, restart_secs=restart_secs,
        corrective_action=corrective_action,
    )
    return msg


def build_init_ack(*, sequence: int, invocation_id: int) -> Dict[str, Any]:
    msg = _base(INIT_ACK, sequence)
    msg["invocation_id"] = invocation_id
    return msg


def build_challenge(*, sequence: int, heartbeat_challenge: int) -> Dict[str, Any]:
    # _base inlined (same keys, same order): one per guest per interval
    return {"version": VERSION, "revision": REVISION, "msg_type": CHALLENGE,
            "sequence": sequence & UINT32_MAX, "heartbeat_challenge": heartbeat_challenge}


def build_challenge_response(*, sequence: int, heartbeat_response: int, heartbeat_health: str,
                             corrective_action: str, log_msg: str = "") -> Dict[str, Any]:
    msg = _base(CHALLENGE_RESPONSE, sequence)
    msg.update(heartbeat_response=heartbeat_response, heartbeat_health=heartbeat_health,
               corrective_action=corrective_action, log_msg=truncate_utf8(log_msg, LOG_MSG_MAX))
    return msg


def build_exit(*, sequence: int, log_msg: str = "") -> Dict[str, Any]:
    msg = _base(EXIT, sequence)
    msg["log_msg"] = truncate_utf8(log_msg, LOG_MSG_MAX)
    return msg


def build_action_notify(*, sequence: int, invocation_id: int, event_type: str,
                        notification_type: str, timeout_ms: int) -> Dict[str, Any]:
    msg = _base(ACTION_NOTIFY, sequence)
    msg.update(invocation_id=invocation_id, event_type=event_type,
               notification_type=notification_type, timeout_ms=timeout_ms)
    return msg


def build_action_response(*, sequence: int, invocation_id: int, event_type: str,
                          notification_type: str, vote_result: str,
                          log_msg: str = "") -> Dict[str, Any]:
    msg = _base(ACTION_RESPONSE, sequence)
    msg.update(invocation_id=invocation_id, event_type=event_type,
               notification_type=notification_type, vote_result=vote_result,
               log_msg=truncate_utf8(log_msg, LOG_MSG_MAX))
    return msg


def build_nack(*, sequence: int, invocation_id: int, log_msg: str = "") -> Dict[str, Any]:
    msg = _base(NACK, sequence)
    msg.update(invocation_id=invocation_id, log_msg=truncate_utf8(log_msg, LOG_MSG_MAX))
    return msg
