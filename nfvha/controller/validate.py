"""Checks on what computes send the controller.  A bad report is answered
with a clear error (and counted), never an exception that kills a handler;
text that is merely too long is cut, so no real fault is lost over it."""
from __future__ import annotations

from typing import Any

from nfvha.controller.timeutil import parse_utc

MAX_ID = 64
MAX_HOST = 255
MAX_DETAIL = 4096
MAX_FACTS = 32
MAX_FACT_TEXT = 255
HEARTBEAT_STATES = frozenset({"waiting", "enabled", "disabled", "failed"})
HEALTH_VALUES = frozenset({"healthy", "unhealthy", None})


class Invalid(ValueError):
    pass


def _text(ev: dict[str, Any], key: str, limit: int, required: bool = True) -> str:
    v = ev.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or not v:
        raise Invalid(f"{key} must be a non-empty string")
    if len(v) > limit:
        raise Invalid(f"{key} longer than {limit}")
    return v


def fault_event(ev: Any) -> dict[str, Any]:
    """The fault event to store, or Invalid."""
    if not isinstance(ev, dict):
        raise Invalid("event must be an object")
    out: dict[str, Any] = {
        "id": _text(ev, "id", MAX_ID),
        "instance_uuid": _text(ev, "instance_uuid", MAX_ID),
        "host": _text(ev, "host", MAX_HOST),
        "kind": _text(ev, "kind", MAX_ID),
    }
    action = ev.get("corrective_action")
    out["corrective_action"] = action if isinstance(action, str) and action else "unknown"
    out["corrective_action"] = out["corrective_action"][:32]
    detail = ev.get("detail")
    out["detail"] = (detail if isinstance(detail, str) else "" if detail is None
                     else str(detail))[:MAX_DETAIL]
    try:
        out["detected_at"] = parse_utc(str(ev["detected_at"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise Invalid("detected_at must be an ISO 8601 timestamp") from exc
    mono = ev.get("detected_mono")
    out["detected_mono"] = float(mono) if isinstance(mono, (int, float)) else None
    return out


def instance_record(host: Any, rec: dict[str, Any]) -> dict[str, Any]:
    """One instance report (``instance_state`` kwargs or a ``hello`` item)."""
    if not isinstance(host, str) or not host or len(host) > MAX_HOST:
        raise Invalid("host must be a non-empty string")
    uuid = rec.get("instance_uuid", rec.get("uuid"))
    if not isinstance(uuid, str) or not uuid or len(uuid) > MAX_ID:
        raise Invalid("instance_uuid must be a non-empty string")
    state = rec.get("state")
    if state not in HEARTBEAT_STATES:
        raise Invalid(f"state must be one of {sorted(HEARTBEAT_STATES)}")
    health = rec.get("health")
    if health not in HEALTH_VALUES:
        raise Invalid("health must be healthy, unhealthy or null")
    interval = rec.get("interval_ms")
    if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)
                                 or interval < 0):
        raise Invalid("interval_ms must be a non-negative integer or null")
    name = rec.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise Invalid("name must be a string of at most 255")
    action = rec.get("corrective_action")
    if action is not None and (not isinstance(action, str) or len(action) > 32):
        raise Invalid("corrective_action must be a short string")
    at = rec.get("at")
    try:
        at_t = parse_utc(at) if isinstance(at, str) else None
    except ValueError as exc:
        raise Invalid("at must be an ISO 8601 timestamp") from exc
    known = {"instance_uuid", "uuid", "host", "state", "health", "interval_ms",
             "corrective_action", "name", "at"}
    # free-form registration facts (vote_secs, ...): scalars only, bounded,
    # since part of them comes from the guest
    facts: dict[str, Any] = {}
    for k, v in rec.items():
        if k in known or not isinstance(k, str) or len(k) > MAX_ID:
            continue
        if len(facts) >= MAX_FACTS:
            break
        if isinstance(v, str):
            facts[k] = v[:MAX_FACT_TEXT]
        elif isinstance(v, (int, float, bool, type(None))):
            facts[k] = v
    return {"uuid": uuid, "host": host, "state": state, "health": health,
            "interval_ms": interval, "corrective_action": action, "name": name,
            "at": at_t, "facts": facts}
