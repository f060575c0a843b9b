"""Nova notifications → normalized instance changes (docs/server-group.md).

Accepts what a listener finds on RabbitMQ, in any of the shapes Nova emits:

- the messagingv2 envelope ``{"oslo.version": "2.0", "oslo.message": "<JSON>"}``
  (raw AMQP body, as bytes, str or an already decoded dict);
- the inner message ``{message_id, publisher_id, event_type, priority,
  payload, timestamp}``;
- legacy ``compute.instance.*`` payloads (``instance_id``, ``state``,
  ``old_state``, ``old_task_state``, ``new_task_state``, ...);
- versioned ``instance.*`` payloads (``payload["nova_object.data"]`` with
  ``uuid``, ``host``, ``state``, ``task_state``, ``power_state`` and, for
  ``instance.update``, ``state_update``).

Junk raises ``NotificationError`` (a ValueError) with a clear reason; a
well-formed notification about something other than an instance returns
None. ``peer_notification`` builds the ``data`` of the server-group
``notification`` message, trimmed so it fits a StarlingX guest's 4096-byte
buffer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

from nfvha.protocol import sgsession, sgwire

MAX_BODY = 1 << 20  # a notification bigger than 1 MiB is junk, not parsed

# The legacy payload keys peers get (StarlingX guests read the legacy shape).
PEER_FIELDS = (
    "instance_id", "display_name", "host", "state", "old_state", "old_task_state",
    "new_task_state", "power_state", "tenant_id",
)
MAX_FIELD = 255  # encoded JSON bytes of one string field in a peer notification


class NotificationError(ValueError):
    """The message cannot be read as a Nova notification."""


@dataclass(frozen=True)
class InstanceChange:
    uuid: str
    host: Optional[str]
    state: Optional[str]
    old_state: Optional[str]
    task_state: Optional[str]
    power_state: Optional[str]
    event_type: str
    timestamp: Optional[str]
    raw: Dict[str, Any] = field(repr=False, compare=False)
    priority: str = "INFO"
    old_task_state: Optional[str] = None
    tenant_id: Optional[str] = None
    display_name: Optional[str] = None


Body = Union[bytes, bytearray, str, Dict[str, Any]]


def unwrap(body: Body) -> Dict[str, Any]:
    """Raw body (messagingv2 envelope or plain) → the inner notification dict."""
    msg = _load(body, "notification body")
    if "oslo.message" in msg:
        if msg.get("oslo.version") != "2.0":
            raise NotificationError(f"unsupported oslo.version {msg.get('oslo.version')!r}")
        msg = _load(msg["oslo.message"], "oslo.message")
    return msg


def _load(body: Any, what: str) -> Dict[str, Any]:
    if isinstance(body, dict):
        return body
    if isinstance(body, (bytes, bytearray)):
        if len(body) > MAX_BODY:
            raise NotificationError(f"{what} larger than {MAX_BODY} bytes")
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotificationError(f"{what} is not UTF-8") from exc
    if not isinstance(body, str):
        raise NotificationError(f"{what} is {type(body).__name__}, not JSON")
    if len(body) > MAX_BODY:
        raise NotificationError(f"{what} larger than {MAX_BODY} bytes")
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise NotificationError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise NotificationError(f"{what} is not a JSON object")
    return obj


def _opt_str(d: Dict[str, Any], key: str) -> Optional[str]:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # legacy power_state is Nova's integer code
    if not isinstance(v, str):
        raise NotificationError(f"field {key!r} must be a string")
    return v


def _obj_data(v: Any) -> Dict[str, Any]:
    if isinstance(v, dict) and isinstance(v.get("nova_object.data"), dict):
        return v["nova_object.data"]
    return {}


def parse(body: Body) -> Optional[InstanceChange]:
    """One notification (any accepted shape) → InstanceChange, or None if not about
    an instance. Raises NotificationError for junk."""
    msg = unwrap(body)
    return from_message(msg)


def from_message(msg: Dict[str, Any]) -> Optional[InstanceChange]:
    event_type = msg.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise NotificationError("notification without event_type")
    payload = msg.get("payload")
    if not isinstance(payload, dict):
        raise NotificationError(f"{event_type}: payload is not an object")
    priority = msg.get("priority", "INFO")
    timestamp = msg.get("timestamp")
    if not isinstance(priority, str) or not (timestamp is None or isinstance(timestamp, str)):
        raise NotificationError(f"{event_type}: priority/timestamp must be strings")
    priority = priority.upper()  # oslo listeners name priorities in lower case
    if event_type.startswith("compute.instance."):
        return _legacy(event_type, payload, priority, timestamp, msg)
    if event_type.startswith("instance."):
        return _versioned(event_type, payload, priority, timestamp, msg)
    return None


def from_listener(
    publisher_id: str, event_type: str, payload: Any, metadata: Dict[str, Any],
    priority: str = "INFO",
) -> Optional[InstanceChange]:
    """Arguments an oslo.messaging notification endpoint receives → InstanceChange.
    (The dict ``nfvha.bus`` hands to a notification callback goes to ``from_message``.)"""
    msg = {
        "publisher_id": publisher_id, "event_type": event_type, "payload": payload,
        "priority": priority, "timestamp": (metadata or {}).get("timestamp"),
        "message_id": (metadata or {}).get("message_id"),
    }
    return from_message(msg)


def _legacy(event_type, payload, priority, timestamp, raw) -> InstanceChange:
    uuid = payload.get("instance_id") or payload.get("instance_uuid")
    if not isinstance(uuid, str) or not uuid:
        raise NotificationError(f"{event_type}: payload has no instance_id")
    return InstanceChange(
        uuid=uuid, host=_opt_str(payload, "host"), state=_opt_str(payload, "state"),
        old_state=_opt_str(payload, "old_state"),
        task_state=_opt_str(payload, "new_task_state"),
        power_state=_opt_str(payload, "power_state"),
        event_type=event_type, timestamp=timestamp, raw=raw, priority=priority,
        old_task_state=_opt_str(payload, "old_task_state"),
        tenant_id=_opt_str(payload, "tenant_id"),
        display_name=_opt_str(payload, "display_name"),
    )


def _versioned(event_type, payload, priority, timestamp, raw) -> Optional[InstanceChange]:
    data = _obj_data(payload)
    if not data:
        raise NotificationError(f"{event_type}: payload has no nova_object.data")
    uuid = data.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        # instance.* events without an instance uuid (none known today): not ours
        return None
    upd = _obj_data(data.get("state_update"))
    return InstanceChange(
        uuid=uuid, host=_opt_str(data, "host"),
        state=_opt_str(data, "state") or _opt_str(upd, "state"),
        old_state=_opt_str(upd, "old_state"),
        task_state=_opt_str(data, "task_state") if "task_state" in data
        else _opt_str(upd, "new_task_state"),
        power_state=_opt_str(data, "power_state"),
        event_type=event_type, timestamp=timestamp, raw=raw, priority=priority,
        old_task_state=_opt_str(upd, "old_task_state"),
        tenant_id=_opt_str(data, "tenant_id"),
        display_name=_opt_str(data, "display_name"),
    )


def peer_notification(change: InstanceChange) -> Dict[str, Any]:
    """The ``data`` of the server-group notification message:
    ``{payload, event_type, priority, timestamp}`` (StarlingX's shape), with the
    legacy payload fields only, so the message fits a 4096-byte guest buffer."""
    values = {
        "instance_id": change.uuid, "display_name": change.display_name,
        "host": change.host, "state": change.state, "old_state": change.old_state,
        "old_task_state": change.old_task_state, "new_task_state": change.task_state,
        "power_state": change.power_state, "tenant_id": change.tenant_id,
    }
    payload = {k: _cut(values[k]) for k in PEER_FIELDS if values[k] is not None}
    data = {
        "payload": payload, "event_type": _cut(change.event_type),
        "priority": _cut(change.priority),
        "timestamp": None if change.timestamp is None else _cut(change.timestamp),
    }
    # Holds by construction (12 fields x 255 bytes); checked so a change to the
    # field list can never put an oversized message on a guest's port.
    size = sgwire.encoded_size(sgsession.for_guest(sgwire.notification(data)))
    if size > sgwire.MAX_MSG:
        raise NotificationError(f"peer notification is {size} bytes")
    return data


def _cut(v: str) -> str:
    # Only absurd values (a 10 kB display_name) are shortened; measured as the
    # escaped JSON the guest receives, where one non-ASCII char costs up to 12 bytes.
    v = v[:MAX_FIELD]
    while len(json.dumps(v)) - 2 > MAX_FIELD:
        v = v[:-1]
    return v
