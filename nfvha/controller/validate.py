"""Checks on what computes send the controller.  A bad report is answered
with a clear error (and counted), never an exception that kills a handler;
text that is merely too long is cut, so no real fault is lost over it.

Every function here raises ``Invalid`` (with the reason) and nothing else,
whatever JSON-like value it is given: out-of-range timestamps, numbers too
big for a float, NaN and infinities, integers beyond 64 bits, lists or
objects where a string belongs (tests/test_validators_never_raise.py drives
them with hypothesis; ``make fuzz`` at volume).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Optional

from nfvha.controller.timeutil import parse_utc

MAX_ID = 64
MAX_HOST = 255
MAX_DETAIL = 4096
MAX_FACTS = 32
MAX_FACT_TEXT = 255
MAX_TIMESTAMP_TEXT = 64
MAX_INTERVAL_MS = 2**31 - 1  # the store's column is a 32-bit INTEGER on every backend
INT64 = (-(2**63), 2**63 - 1)
# What a compute's clock may say: later arithmetic (+ a lease, - a window) and
# every backend (MariaDB DATETIME starts at year 1000) stay in range.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)
HEARTBEAT_STATES = frozenset({"waiting", "enabled", "disabled", "failed"})
HEALTH_VALUES = ("healthy", "unhealthy", None)


class Invalid(ValueError):
    pass


def is_text(v: str) -> bool:
    """A lone surrogate (the JSON escape "\\udcff") is a str but not text:
    no database driver and no JSON response can encode it. Nor is a NUL,
    which PostgreSQL cannot store."""
    if "\x00" in v:
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def cut(v: str, limit: int) -> str:
    """Free text, at most ``limit`` characters, lone surrogates replaced."""
    v = v[:limit]
    return v if is_text(v) else \
        v.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _text(ev: dict[str, Any], key: str, limit: int, required: bool = True) -> str:
    v = ev.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or not v:
        raise Invalid(f"{key} must be a non-empty string")
    if len(v) > limit:
        raise Invalid(f"{key} longer than {limit}")
    if not is_text(v):
        raise Invalid(f"{key} holds a lone surrogate: not text")
    return v


def timestamp(value: Any, what: str) -> datetime:
    """An ISO 8601 string within [EARLIEST, LATEST) as an aware UTC datetime."""
    if not isinstance(value, str) or not value or len(value) > MAX_TIMESTAMP_TEXT:
        raise Invalid(f"{what} must be an ISO 8601 timestamp (a string)")
    try:
        t = parse_utc(value)
    except (ValueError, OverflowError) as exc:  # year 1 + an offset leaves datetime's range
        raise Invalid(f"{what} must be an ISO 8601 timestamp") from exc
    if not EARLIEST <= t < LATEST:
        raise Invalid(f"{what} out of range ({EARLIEST.year} to {LATEST.year})")
    return t


def finite_number(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None (not a number, NaN, inf, too big)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:  # an int beyond a float's range
        return None
    return f if math.isfinite(f) else None


def int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) \
        and INT64[0] <= value <= INT64[1]


def _scalar_fact(v: Any) -> tuple[bool, Any]:
    """(keep, value) for one free-form fact: short text, bool, null, a 64-bit
    integer or a finite float; anything else is dropped."""
    if isinstance(v, str):
        return True, cut(v, MAX_FACT_TEXT)
    if v is None or isinstance(v, bool):
        return True, v
    if isinstance(v, int):
        return int64(v), v
    if isinstance(v, float):
        return math.isfinite(v), v
    return False, None


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
    out["corrective_action"] = cut(action, 32) if isinstance(action, str) and action \
        else "unknown"
    detail = ev.get("detail")
    if detail is None:
        out["detail"] = ""
    elif isinstance(detail, str):
        out["detail"] = cut(detail, MAX_DETAIL)
    else:  # a non-text detail is kept as short text
        try:
            out["detail"] = cut(str(detail), MAX_DETAIL)
        except (ValueError, RecursionError):  # an int past str()'s digit limit, deep nesting
            out["detail"] = f"<{type(detail).__name__}>"
    if "detected_at" not in ev:
        raise Invalid("detected_at must be an ISO 8601 timestamp")
    out["detected_at"] = timestamp(ev["detected_at"], "detected_at")
    out["detected_mono"] = finite_number(ev.get("detected_mono"))
    return out


def instance_record(host: Any, rec: Any) -> dict[str, Any]:
    """One instance report (``instance_state`` kwargs or a ``hello`` item)."""
    if not isinstance(host, str) or not host or len(host) > MAX_HOST or not is_text(host):
        raise Invalid("host must be a non-empty string")
    if not isinstance(rec, dict):
        raise Invalid("an instance report must be an object")
    uuid = rec.get("instance_uuid", rec.get("uuid"))
    if not isinstance(uuid, str) or not uuid or len(uuid) > MAX_ID or not is_text(uuid):
        raise Invalid("instance_uuid must be a non-empty string")
    state = rec.get("state")
    # isinstance first: a list or an object is unhashable, `in` a set would raise
    if not isinstance(state, str) or state not in HEARTBEAT_STATES:
        raise Invalid(f"state must be one of {sorted(HEARTBEAT_STATES)}")
    health = rec.get("health")
    if not (health is None or isinstance(health, str)) or health not in HEALTH_VALUES:
        raise Invalid("health must be healthy, unhealthy or null")
    interval = rec.get("interval_ms")
    if interval is not None and (not int64(interval) or not 0 <= interval <= MAX_INTERVAL_MS):
        raise Invalid(f"interval_ms must be an integer from 0 to {MAX_INTERVAL_MS} or null")
    name = rec.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 255
                             or not is_text(name)):
        raise Invalid("name must be a string of at most 255")
    action = rec.get("corrective_action")
    if action is not None and (not isinstance(action, str) or len(action) > 32
                               or not is_text(action)):
        raise Invalid("corrective_action must be a short string")
    at = rec.get("at")
    at_t = None if at is None else timestamp(at, "at")
    known = {"instance_uuid", "uuid", "host", "state", "health", "interval_ms",
             "corrective_action", "name", "at"}
    # free-form registration facts (vote_secs, ...): scalars only, bounded,
    # since part of them comes from the guest; one that is not is dropped,
    # not the report (the heartbeat state must still be heard)
    facts: dict[str, Any] = {}
    for k, v in rec.items():
        if k in known or not isinstance(k, str) or len(k) > MAX_ID or not is_text(k):
            continue
        if len(facts) >= MAX_FACTS:
            break
        keep, value = _scalar_fact(v)
        if keep:
            facts[k] = value
    return {"uuid": uuid, "host": host, "state": state, "health": health,
            "interval_ms": interval, "corrective_action": action, "name": name,
            "at": at_t, "facts": facts}


def sync_report(host: Any, count: Any, digest: Any) -> None:
    """A compute's periodic digest (``sync``): Invalid if malformed."""
    if not isinstance(host, str) or not host or len(host) > MAX_HOST or not is_text(host):
        raise Invalid("host must be a non-empty string of at most 255")
    if not isinstance(digest, str) or len(digest) > 64:
        raise Invalid("digest must be a string of at most 64")
    if count is not None and (not int64(count) or count < 0):
        raise Invalid("count must be a non-negative integer")
