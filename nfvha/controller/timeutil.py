"""UTC timestamps: every one the controller stores or shows is UTC ISO 8601
with microseconds (``2026-11-24T03:31:42.123456+00:00``)."""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_utc(text: str) -> datetime:
    """Parse ISO 8601; a naive value is taken as UTC. Raises ValueError."""
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        return t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def iso(t: datetime | None) -> str | None:
    """Aware or naive-UTC datetime → ISO 8601 UTC, always with microseconds."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def to_db(t: datetime) -> datetime:
    """Stored as naive UTC: portable across SQLite, PostgreSQL and MariaDB."""
    if t.tzinfo is None:
        return t
    return t.astimezone(timezone.utc).replace(tzinfo=None)
