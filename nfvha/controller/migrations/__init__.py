"""Schema migrations of the controller's store (Alembic).

`upgrade(engine)` brings a database to the newest schema. Every controller
runs it when it opens the store, so no separate step is needed. Several
controllers may start at once against one server database: a database lock
(PostgreSQL advisory lock, MariaDB GET_LOCK) lets one migrate while the
others wait.

A store made before migrations existed (no ``alembic_version``) first gets
the tables and nullable columns it lacks added in place, which brings it to
the baseline, and is then stamped and upgraded like any other. (When a
migration adds a column, that fix-up must keep to the baseline's columns.)

A schema change = a new file in versions/ whose ``down_revision`` is the
last one; ``store.py``'s tables describe the newest schema, and
``tests/test_store_migrations.py`` checks that the two agree.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

BASELINE = "0001"
BASELINE_TABLES = {"instances", "events", "deliveries", "server_groups"}
LOCK_KEY = 7_270_001            # PostgreSQL advisory lock id
LOCK_NAME = "nfvha-migrations"  # MariaDB/MySQL named lock


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return rev


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _locked(conn: Connection) -> Iterator[None]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text(f"SELECT pg_advisory_lock({LOCK_KEY})"))
    elif dialect in ("mysql", "mariadb"):
        got = conn.execute(text(f"SELECT GET_LOCK('{LOCK_NAME}', 120)")).scalar()
        if got != 1:
            raise RuntimeError("another nfvha controller holds the migration lock")
    conn.commit()
    try:
        yield
    finally:
        if dialect == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_unlock({LOCK_KEY})"))
        elif dialect in ("mysql", "mariadb"):
            conn.execute(text(f"SELECT RELEASE_LOCK('{LOCK_NAME}')"))
        conn.commit()


def upgrade(engine: Engine, add_missing_columns: Callable[[Connection], None]) -> \
        tuple[str | None, str]:
    """Migrates to the newest schema; returns (revision before, after).
    `add_missing_columns(conn)` brings a store made before migrations to the
    baseline (its missing tables and nullable columns)."""
    with engine.connect() as conn, _locked(conn):
        before = MigrationContext.configure(conn).get_current_revision()
        if before is None and BASELINE_TABLES & set(inspect(conn).get_table_names()):
            add_missing_columns(conn)                 # made before migrations existed
            conn.commit()
            command.stamp(_config(conn), BASELINE)
            conn.commit()
        command.upgrade(_config(conn), "head")
        conn.commit()
        return before, head()
