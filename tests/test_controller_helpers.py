"""Helpers shared by the controller/store/reporter/API tests (no tests here)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import require_tcp

SERVER_DBS = {
    "postgresql": ("postgresql+psycopg2://postgres@127.0.0.1/", "postgres", 5432, "PostgreSQL"),
    "mariadb": ("mysql+pymysql://root@127.0.0.1/", "mysql", 3306, "MariaDB"),
}


def fault(**over: Any) -> dict[str, Any]:
    ev = {"id": str(uuid.uuid4()), "instance_uuid": str(uuid.uuid4()), "host": "compute-1",
          "kind": "heartbeat_loss", "corrective_action": "reboot",
          "detail": "2 consecutive misses",
          "detected_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
          "detected_mono": 123.5}
    ev.update(over)
    return ev


def db_urls(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh, empty database of the kind ``request.param`` names."""
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/nfvha.sqlite"
        return
    base, admin_db, port, what = SERVER_DBS[kind]
    require_tcp("127.0.0.1", port, what)
    name = f"nfvha_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base + admin_db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield base + name
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE {name}"))
        admin.dispose()

