"""The server-group part of the controller's store (tables in store.py):
what several controllers on one database share beyond the groups
themselves (``Store.put_server_group`` and friends).

- ``groups_fingerprint``: one cheap read that changes whenever a REST group
  is created, replaced or deleted, by any controller: the others poll it
  as the backstop of the change signal they get over the bus.
- placements (``server_group_placements``): where each messaging channel
  is and which VM it is, as its compute agent last said; a controller that
  starts or restarts loads them and routes at once.
- ``member_states``: the heartbeat states on record, light (no facts): the
  controllers re-read them now and then, in case a change another one
  told them of was lost on the bus.

Synchronous like the Store: the controller runs these in its DB thread.
Writes are idempotent upserts, because every controller hears the same
placement and writes it (``INSERT ... ON CONFLICT`` / ``ON DUPLICATE KEY``:
two controllers writing one row at once never fail on the key).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from nfvha.controller.store import instances, server_groups
from nfvha.controller.store import server_group_placements as placements
from nfvha.controller.timeutil import to_db, utcnow


def groups_fingerprint(engine: Engine) -> str:
    """Changes with every REST group written or deleted (ids and their
    ``updated_at``; a digest, so a thousand groups cost one short string)."""
    h = hashlib.sha1()
    with engine.connect() as conn:
        for gid, at in conn.execute(select(server_groups.c.id, server_groups.c.updated_at)
                                    .order_by(server_groups.c.id)):
            h.update(f"{gid}\0{at}\0".encode())
    return h.hexdigest()


def member_states(engine: Engine, settled_before: datetime
                  ) -> list[tuple[str, str, str]]:
    """(uuid, host, heartbeat state) of every instance on record whose last
    update is older than `settled_before` (a newer one may still be on its
    way to the peers' notification by the controller that wrote it)."""
    with engine.connect() as conn:
        rows = conn.execute(select(instances.c.uuid, instances.c.host, instances.c.state)
                            .where(instances.c.updated_at < to_db(settled_before)))
        return [(r.uuid, r.host, r.state) for r in rows]


def load_placements(engine: Engine) -> list[tuple[str, str, Optional[str]]]:
    """(name, host, uuid or None) of every messaging channel on record."""
    with engine.connect() as conn:
        rows = conn.execute(select(placements.c.name, placements.c.host, placements.c.uuid)
                            .order_by(placements.c.host, placements.c.name))
        return [(r.name, r.host, r.uuid) for r in rows]


def save_host_placements(engine: Engine, host: str, changed: Mapping[str, Optional[str]],
                         removed: Iterable[str]) -> None:
    """`host` serves the channels `changed` ({name: uuid or None}) and no
    longer `removed` (deleted only while still recorded at `host`: a VM that
    moved on was written by its new host)."""
    removed = list(removed)
    now = to_db(utcnow())
    with engine.begin() as conn:
        if removed:
            conn.execute(placements.delete().where(placements.c.host == host,
                                                   placements.c.name.in_(removed)))
        if changed:
            _upsert(conn, [{"name": n, "host": host, "uuid": u, "updated_at": now}
                           for n, u in changed.items()])


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(placements)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={
            "host": stmt.excluded.host, "uuid": stmt.excluded.uuid,
            "updated_at": stmt.excluded.updated_at})
    elif dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as my_insert

        stmt = my_insert(placements)
        stmt = stmt.on_duplicate_key_update(host=stmt.inserted.host, uuid=stmt.inserted.uuid,
                                            updated_at=stmt.inserted.updated_at)
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as lite_insert

        stmt = lite_insert(placements)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={
            "host": stmt.excluded.host, "uuid": stmt.excluded.uuid,
            "updated_at": stmt.excluded.updated_at})
    else:  # pragma: no cover - the three the store supports
        raise RuntimeError(f"no upsert for {dialect}")
    conn.execute(stmt, rows)
