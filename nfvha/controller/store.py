"""Persistent state of the controller: instances, fault events, deliveries,
and recovery (each instance's loop-protection record, each fault's action).

SQLAlchemy 2 Core, synchronous; the controller runs every call in a worker
thread (one thread for SQLite, whose writers serialise anyway).  SQLite
uses WAL so API readers never block the fault writer; PostgreSQL and
MariaDB work through their URLs when several controllers share one store.

Invariants:
- ``record_fault`` commits the event and one pending delivery per sink in
  one transaction, so a fault is stored before any sink hears of it.
- The event id (made by the compute agent) is unique: a retried fault is a
  no-op that reports the stored event.
- A delivery leaves ``pending`` exactly once, to ``delivered``, ``suppressed`` or
  ``rejected``; an update never moves it back.
- A pending delivery is worked on by the controller holding its lease
  (``owner``, ``lease_until``); leases are renewed while the owner lives and
  taken over when they run out, so a dead controller's work is resumed by
  the others without waiting for its restart.
- Recovery: one decision per fault, taken in one transaction with the
  instance's ``recovery`` row locked (``SELECT ... FOR UPDATE`` on
  PostgreSQL/MariaDB; SQLite's writers are serialised by the controller's
  one DB thread), so whichever controller handles a fault, the counts are
  the same. An action record only moves forward: waiting → issuing →
  issued → succeeded | failed, or to skipped.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from nfvha.controller import migrations
from nfvha.controller.recovery.policy import (
    ACT,
    EXHAUST,
    PAUSED,
    WAIT,
    Decision,
    History,
    Policy,
    after_act,
    decide,
)
from nfvha.controller.timeutil import iso, to_db, utcnow

# MariaDB's DATETIME drops microseconds unless fsp=6 is asked for.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

metadata = MetaData()

instances = Table(
    "instances", metadata,
    Column("uuid", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("name", String(255)),
    Column("state", String(16), nullable=False),       # waiting|enabled|disabled|failed
    Column("health", String(16)),                      # healthy|unhealthy|NULL
    Column("interval_ms", Integer),
    Column("corrective_action", String(32)),
    Column("facts", JSON),                             # other registration facts
    Column("state_at", Timestamp),                     # compute's time of the state
    Column("updated_at", Timestamp, nullable=False),   # controller's time of the update
)

events = Table(
    "events", metadata,
    # seq orders events by arrival ("newest last") and pages ?since= cheaply
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("instance_uuid", String(64), nullable=False, index=True),
    Column("host", String(255), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("corrective_action", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("detected_at", Timestamp, nullable=False),
    Column("detected_mono", Float),
    Column("received_at", Timestamp, nullable=False, index=True),
)

deliveries = Table(
    "deliveries", metadata,
    Column("event_id", String(64), primary_key=True),
    Column("sink", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # pending|delivered|rejected|suppressed
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("note", Text),
    Column("delivered_at", Timestamp),
    # lease: the controller working on a pending delivery, and until when;
    # another controller may take it over once the lease has run out
    Column("owner", String(128)),
    Column("lease_until", Timestamp),
)
# Every lease pass (each controller, five times a second) looks for pending
# deliveries, its own or claimable: without this, a scan of every delivery
# ever made (migration 0004).
Index("ix_deliveries_status_owner", deliveries.c.status, deliveries.c.owner)

# Server groups defined through the REST API (Nova's come from Nova, config's
# from the config file at each start): kept so a controller restart keeps them.
server_groups = Table(
    "server_groups", metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("members", JSON, nullable=False),           # instance uuids or names
    Column("origin", String(16), nullable=False),      # api | config | nova
    Column("updated_at", Timestamp, nullable=False),
)

# Where each instance's messaging channel is, as its compute agent last said
# (sg_instances / sg_links): a controller that starts, or restarts, routes
# server-group messages at once. Read and written by servergroup_store.py.
server_group_placements = Table(
    "server_group_placements", metadata,
    Column("name", String(255), primary_key=True),     # cgcs.messaging.<name>.sock
    Column("host", String(255), nullable=False, index=True),
    Column("uuid", String(64)),                        # the VM behind it, if known
    Column("updated_at", Timestamp, nullable=False),
)

# Loop protection of one instance (controller/recovery/policy.py's History)
recovery = Table(
    "recovery", metadata,
    Column("instance_uuid", String(64), primary_key=True),
    Column("action_times", JSON, nullable=False),      # epoch s of counted actions, oldest first
    Column("paused", Boolean, nullable=False),
    Column("paused_reason", Text),
    Column("exhausted", Boolean, nullable=False),
    Column("exhausted_at", Timestamp),
    Column("updated_at", Timestamp, nullable=False),
)

# One per fault the recovery sink handled; the action's id is the event id
actions = Table(
    "actions", metadata,
    Column("event_id", String(64), primary_key=True),
    Column("instance_uuid", String(64), nullable=False, index=True),
    Column("mode", String(16), nullable=False),         # libvirt | nova
    Column("action", String(16)),                       # reset|destroy|nova_reboot|nova_stop|NULL
    Column("status", String(16), nullable=False, index=True),
    Column("reason", Text),
    Column("issued_at", Timestamp),                     # when the action was decided and asked
    Column("done_at", Timestamp),                       # when the compute / Nova carried it out
    Column("recovered_at", Timestamp),                  # guest heartbeats again (compute time)
    Column("recovery_ms", Integer),
)

PENDING, DELIVERED, REJECTED, SUPPRESSED = "pending", "delivered", "rejected", "suppressed"
# Sink names PostgreSQL orders as Python does, whatever the database's
# collation (a locale's ignores '-' and '_' and folds case at first)
_PLAIN_NAME = re.compile(r"[a-z0-9]*")
WAITING, ISSUING, ISSUED = "waiting", "issuing", "issued"
SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"
ACTION_STATUSES = (WAITING, ISSUING, ISSUED, SUCCEEDED, FAILED, SKIPPED)
OPEN_ACTIONS = (ISSUING, ISSUED)   # asked for, guest not back yet


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash (SIGKILL),
            # only an OS crash may lose the last commits.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, url: str, reorder_window_s: float = 5.0) -> None:
        self.url = url
        self.reorder_window = timedelta(seconds=reorder_window_s)
        self.engine = make_engine(url)
        migrations.upgrade(self.engine, _add_missing_columns)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    # --- faults ------------------------------------------------------------
    def record_fault(self, ev: dict[str, Any], sinks: Iterable[str],
                     received_at: Optional[datetime] = None, owner: Optional[str] = None,
                     lease_until: Optional[datetime] = None,
                     lease_s: Optional[float] = None) -> tuple[dict[str, Any], bool]:
        """Store ``ev`` (already validated) with one pending delivery per sink.
        ``lease_s``: the owner's lease runs that long from the write itself
        (not from a moment the write may have queued behind others).

        Returns (stored event, created). created=False: the id was known (a
        compute retry); nothing was written."""
        received = to_db(received_at or utcnow())
        if lease_until is None and lease_s is not None:
            lease_until = utcnow() + timedelta(seconds=lease_s)
        row = {
            "id": ev["id"], "instance_uuid": ev["instance_uuid"], "host": ev["host"],
            "kind": ev["kind"], "corrective_action": ev["corrective_action"],
            "detail": ev["detail"], "detected_at": to_db(ev["detected_at"]),
            "detected_mono": ev.get("detected_mono"), "received_at": received,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(events).values(**row))
                lease = to_db(lease_until) if lease_until is not None else None
                sink_rows = [{"event_id": ev["id"], "sink": s, "status": PENDING,
                              "attempts": 0, "owner": owner, "lease_until": lease}
                             for s in sinks]
                if sink_rows:
                    conn.execute(insert(deliveries), sink_rows)
        except IntegrityError:
            stored = self.get_event(ev["id"])
            if stored is None:  # the integrity error was something else
                raise
            return stored, False
        if self._reads_back_as_written(sink_rows):
            return _new_event_dict(row, sink_rows), True
        stored = self.get_event(ev["id"])
        assert stored is not None
        return stored, True

    def _reads_back_as_written(self, sink_rows: list[dict[str, Any]]) -> bool:
        """Whether the event just written reads back exactly as written, so
        reading it (three queries, a third of a fault's store time) can be
        spared: SQLite and PostgreSQL keep floats as doubles and times to the
        microsecond; MariaDB's FLOAT is single precision, and its collation
        may order the deliveries otherwise."""
        dialect = self.engine.dialect.name
        return dialect == "sqlite" or (dialect == "postgresql" and all(
            _PLAIN_NAME.fullmatch(d["sink"]) for d in sink_rows))

    def get_event(self, event_id: str) -> Optional[dict[str, Any]]:
        # a new event's form is _new_event_dict's too: change both together
        with self.engine.connect() as conn:
            row = conn.execute(select(events).where(events.c.id == event_id)).mappings().first()
            if row is None:
                return None
            return self._event_dict(conn, [row])[0]

    def list_events(self, since: Optional[datetime] = None,
                    limit: int = 1000) -> list[dict[str, Any]]:
        """Oldest first. With ``since``: the first ``limit`` received after it;
        without: the newest ``limit``."""
        with self.engine.connect() as conn:
            q = select(events)
            if since is not None:
                q = q.where(events.c.received_at > to_db(since)).order_by(
                    events.c.received_at, events.c.seq).limit(limit)
                rows = list(conn.execute(q).mappings())
            else:
                q = q.order_by(events.c.received_at.desc(), events.c.seq.desc()).limit(limit)
                rows = list(conn.execute(q).mappings())[::-1]
            return self._event_dict(conn, rows)

    def _event_dict(self, conn: Connection, rows: list[Any]) -> list[dict[str, Any]]:
        ids = [r["id"] for r in rows]
        by_event: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        action_of: dict[str, dict[str, Any]] = {}
        if ids:
            q = select(deliveries).where(deliveries.c.event_id.in_(ids)).order_by(
                deliveries.c.sink)
            for d in conn.execute(q).mappings():
                by_event[d["event_id"]].append({
                    "sink": d["sink"], "status": d["status"], "attempts": d["attempts"],
                    "last_error": d["last_error"], "note": d["note"],
                    "delivered_at": iso(d["delivered_at"])})
            for a in conn.execute(select(actions).where(actions.c.event_id.in_(ids))).mappings():
                action_of[a["event_id"]] = _action_dict(a)
        return [{
            "id": r["id"], "instance_uuid": r["instance_uuid"], "host": r["host"],
            "kind": r["kind"], "corrective_action": r["corrective_action"],
            "detail": r["detail"], "detected_at": iso(r["detected_at"]),
            "detected_mono": r["detected_mono"], "received_at": iso(r["received_at"]),
            "deliveries": by_event[r["id"]], "action": action_of.get(r["id"]),
        } for r in rows]

    # --- deliveries --------------------------------------------------------
    def claim_pending(self, owner: str, now: datetime,
                      lease_until: datetime) -> list[tuple[dict[str, Any], str, int]]:
        """Take the lease of every pending delivery that is ours already, has
        no owner, or whose lease ran out; return all pending ones we own."""
        now_db, until = to_db(now), to_db(lease_until)
        with self.engine.begin() as conn:
            # One UPDATE: the database row locks decide between controllers that
            # claim at the same moment (the loser's WHERE no longer matches).
            conn.execute(update(deliveries).where(
                deliveries.c.status == PENDING,
                (deliveries.c.owner == owner) | deliveries.c.lease_until.is_(None)
                | (deliveries.c.lease_until < now_db),
            ).values(owner=owner, lease_until=until))
        return self.pending_deliveries(owner=owner)

    def confirm_lease(self, event_id: str, sink: str, owner: str, lease_s: float) -> bool:
        """Right before a delivery attempt: renew our lease on it, or learn that
        it is no longer ours (another controller took it over while we were
        stalled) or no longer pending. The database decides, so two
        controllers never both call a sink for one delivery they both think
        they hold."""
        until = to_db(utcnow() + timedelta(seconds=lease_s))
        with self.engine.begin() as conn:
            return conn.execute(update(deliveries).where(
                deliveries.c.event_id == event_id, deliveries.c.sink == sink,
                deliveries.c.status == PENDING, deliveries.c.owner == owner,
            ).values(lease_until=until)).rowcount == 1

    def release_event(self, event_id: str, owner: str) -> int:
        """A fault stored while its controller stops: others may take it at once."""
        with self.engine.begin() as conn:
            return conn.execute(update(deliveries).where(
                deliveries.c.event_id == event_id, deliveries.c.status == PENDING,
                deliveries.c.owner == owner,
            ).values(owner=None, lease_until=None)).rowcount

    def release_leases(self, owner: str) -> int:
        """Orderly stop: others may take our pending deliveries at once."""
        with self.engine.begin() as conn:
            return conn.execute(update(deliveries).where(
                deliveries.c.status == PENDING, deliveries.c.owner == owner,
            ).values(owner=None, lease_until=None)).rowcount

    def pending_deliveries(self, owner: Optional[str] = None
                           ) -> list[tuple[dict[str, Any], str, int]]:
        """(event, sink, attempts so far) for every pending delivery (of
        ``owner`` if given), oldest first."""
        with self.engine.connect() as conn:
            q = (select(deliveries.c.event_id, deliveries.c.sink, deliveries.c.attempts)
                 .where(deliveries.c.status == PENDING))
            if owner is not None:
                q = q.where(deliveries.c.owner == owner)
            pend = list(conn.execute(q))
            if not pend:
                return []
            ids = sorted({p.event_id for p in pend})
            rows = list(conn.execute(select(events).where(events.c.id.in_(ids)).order_by(
                events.c.seq)).mappings())
            evs = {e["id"]: e for e in self._event_dict(conn, rows)}
            order = {e["id"]: i for i, e in enumerate(rows)}
        pend.sort(key=lambda p: (order.get(p.event_id, 0), p.sink))
        return [(evs[p.event_id], p.sink, p.attempts) for p in pend if p.event_id in evs]

    def _finish(self, event_id: str, sink: str, values: dict[str, Any]) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(update(deliveries).where(
                deliveries.c.event_id == event_id, deliveries.c.sink == sink,
                deliveries.c.status == PENDING).values(**values))
            return res.rowcount == 1

    def mark_delivered(self, event_id: str, sink: str, note: Optional[str] = None,
                       at: Optional[datetime] = None) -> bool:
        return self._finish(event_id, sink, {
            "status": DELIVERED, "attempts": deliveries.c.attempts + 1, "note": note,
            "delivered_at": to_db(at or utcnow())})

    def mark_rejected(self, event_id: str, sink: str, error: str) -> bool:
        return self._finish(event_id, sink, {
            "status": REJECTED, "attempts": deliveries.c.attempts + 1,
            "last_error": error[:2000]})

    def mark_suppressed(self, event_id: str, sink: str, reason: str) -> bool:
        """Not sent: a planned operation explains the fault (planned.py)."""
        return self._finish(event_id, sink, {"status": SUPPRESSED, "note": reason[:2000]})

    def mark_failed_attempt(self, event_id: str, sink: str, error: str) -> bool:
        return self._finish(event_id, sink, {
            "attempts": deliveries.c.attempts + 1, "last_error": error[:2000]})

    # --- instances ---------------------------------------------------------
    def upsert_instance(self, rec: dict[str, Any], received_at: Optional[datetime] = None) -> bool:
        """Insert or update one instance.  An update a little older than the
        stored state (within ``reorder_window``) was overtaken on the way and
        is ignored (returns False); one much older means the compute's clock
        stepped back (NTP), and is applied rather than freezing the record."""
        now = to_db(received_at or utcnow())
        state_at = to_db(rec["at"]) if rec.get("at") is not None else now
        values = {
            "host": rec["host"], "name": rec.get("name"), "state": rec["state"],
            "health": rec.get("health"), "interval_ms": rec.get("interval_ms"),
            "corrective_action": rec.get("corrective_action"),
            "facts": rec.get("facts") or {}, "state_at": state_at, "updated_at": now,
        }
        with self.engine.begin() as conn:
            cur = conn.execute(select(instances.c.state_at, instances.c.name).where(
                instances.c.uuid == rec["uuid"])).first()
            if cur is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(instances).values(uuid=rec["uuid"], **values))
                    return True
                except IntegrityError:  # another controller inserted it meanwhile
                    cur = conn.execute(select(instances.c.state_at, instances.c.name).where(
                        instances.c.uuid == rec["uuid"])).first()
            assert cur is not None
            if cur.state_at is not None and \
                    cur.state_at - self.reorder_window < state_at < cur.state_at:
                return False
            if values["name"] is None:
                values["name"] = cur.name  # a state change need not repeat the name
            conn.execute(update(instances).where(instances.c.uuid == rec["uuid"]).values(
                **values))
            return True

    def forget_host_instances_except(self, host: str, keep: Iterable[str]) -> int:
        """A compute (re)started: instances it no longer reports are gone from it."""
        keep = list(keep)
        with self.engine.begin() as conn:
            q = instances.delete().where(instances.c.host == host)
            if keep:
                q = q.where(instances.c.uuid.not_in(keep))
            return conn.execute(q).rowcount

    def host_inventory(self, host: str) -> list[tuple[str, str, Optional[str]]]:
        """(uuid, heartbeat state, health) of every instance on `host`."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(instances.c.uuid, instances.c.state, instances.c.health)
                                .where(instances.c.host == host))
            return [(r.uuid, r.state, r.health) for r in rows]

    def host_instance_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(instances.c.host, func.count())
                                .group_by(instances.c.host))
            return {r[0]: r[1] for r in rows}

    def hosts_with_instances(self) -> list[str]:
        return sorted(self.host_instance_counts())

    def list_instances(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(instances).order_by(instances.c.host, instances.c.uuid))
            return [_instance_dict(r) for r in rows.mappings()]

    def get_instance(self, uuid: str) -> Optional[dict[str, Any]]:
        with self.engine.connect() as conn:
            r = conn.execute(select(instances).where(instances.c.uuid == uuid)).mappings().first()
            return _instance_dict(r) if r is not None else None

    # --- server groups -----------------------------------------------------
    def put_server_group(self, group_id: str, name: str, members: list[str],
                         origin: str = "api") -> None:
        values = {"name": name, "members": list(members), "origin": origin,
                  "updated_at": to_db(utcnow())}
        with self.engine.begin() as conn:
            done = conn.execute(update(server_groups).where(
                server_groups.c.id == group_id).values(**values)).rowcount
            if not done:
                conn.execute(insert(server_groups).values(id=group_id, **values))

    def delete_server_group(self, group_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(server_groups.delete().where(
                server_groups.c.id == group_id)).rowcount > 0

    def list_server_groups(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(server_groups).order_by(server_groups.c.id)).mappings()
            out = []
            for r in rows:
                members = r["members"]
                if isinstance(members, str):
                    members = json.loads(members)
                out.append({"id": r["id"], "name": r["name"], "members": members or [],
                            "origin": r["origin"]})
            return out

    # --- recovery (controller/recovery/) ---------------------------------------
    def decide_action(self, event: dict[str, Any], mode: str, action: str, policy: Policy,
                      now: float) -> tuple[Optional[Decision], dict[str, Any]]:
        """Decide on the fault ``event`` and record the decision, in one
        transaction with the instance's recovery row locked. Returns (the
        decision, the action record); decision None: the fault was decided
        before (its record is past ``waiting``) and nothing was changed."""
        uuid, at = event["instance_uuid"], _from_epoch(now)
        _ensure_recovery(self.engine, uuid, at)
        with self.engine.begin() as conn:
            row = _locked_recovery(conn, uuid, at)
            # no FOR UPDATE here: the recovery row's lock already serialises
            # the decisions on this instance, and a lock on a missing key is
            # a gap lock on MariaDB that deadlocks two inserts
            rec = conn.execute(select(actions).where(actions.c.event_id == event["id"])
                               ).mappings().first()
            if rec is not None and rec["status"] != WAITING:
                return None, _action_dict(rec)
            history = History(tuple(_times(row["action_times"])), bool(row["paused"]),
                              bool(row["exhausted"]))
            decision = decide(policy, history, now)
            values: dict[str, Any] = {"instance_uuid": uuid, "mode": mode, "action": action,
                                      "reason": decision.reason[:2000] or None}
            if decision.verdict == ACT:
                conn.execute(update(recovery).where(recovery.c.instance_uuid == uuid).values(
                    action_times=list(after_act(policy, history, now)), updated_at=at))
                values.update(status=ISSUING, issued_at=at)
            elif decision.verdict == WAIT:
                values.update(status=WAITING)
            else:  # paused, exhausted, exhaust: no action
                if decision.verdict == EXHAUST:
                    conn.execute(update(recovery).where(recovery.c.instance_uuid == uuid)
                                 .values(exhausted=True, exhausted_at=at, updated_at=at))
                if decision.verdict == PAUSED and row["paused_reason"]:
                    values["reason"] = f"{decision.reason}: {row['paused_reason']}"[:2000]
                values.update(status=SKIPPED, done_at=at)
            _put_action(conn, event["id"], rec is not None, values)
            out = conn.execute(select(actions).where(actions.c.event_id == event["id"])
                               ).mappings().one()
            return decision, _action_dict(out)

    def skip_action(self, event: dict[str, Any], mode: str, action: Optional[str],
                    reason: str, at: Optional[datetime] = None
                    ) -> tuple[bool, dict[str, Any]]:
        """No action for this fault (nothing to do, host silent, guest back by
        itself). Returns (changed, record); a record already past
        ``waiting`` is left as it is."""
        values = {"instance_uuid": event["instance_uuid"], "mode": mode, "action": action,
                  "status": SKIPPED, "reason": reason[:2000], "done_at": to_db(at or utcnow())}
        with self.engine.begin() as conn:
            changed = conn.execute(update(actions).where(
                actions.c.event_id == event["id"], actions.c.status == WAITING,
            ).values(**values)).rowcount == 1
        if not changed:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(actions).values(event_id=event["id"], **values))
                changed = True
            except IntegrityError:  # decided already: leave it
                pass
        rec = self.get_action(event["id"])
        assert rec is not None
        return changed, rec

    def _move_action(self, event_id: str, frm: Iterable[str],
                     values: dict[str, Any]) -> Optional[dict[str, Any]]:
        """Move one action record on, only from the statuses ``frm``:
        returns the updated record, or None when it was elsewhere."""
        with self.engine.begin() as conn:
            done = conn.execute(update(actions).where(
                actions.c.event_id == event_id, actions.c.status.in_(list(frm)),
            ).values(**values)).rowcount
            if not done:
                return None
            row = conn.execute(select(actions).where(actions.c.event_id == event_id)
                               ).mappings().one()
            return _action_dict(row)

    def mark_action_issued(self, event_id: str, done_at: Optional[datetime] = None,
                           detail: str = "") -> Optional[dict[str, Any]]:
        """The compute or Nova carried the action out: now the guest must come back."""
        return self._move_action(event_id, (ISSUING,), {
            "status": ISSUED, "done_at": to_db(done_at or utcnow()),
            "reason": detail[:2000] or None})

    def mark_action_done(self, event_id: str, done_at: Optional[datetime] = None,
                         detail: str = "") -> Optional[dict[str, Any]]:
        """An action after which the guest is meant to stay off (destroy,
        Nova stop) was carried out: it has succeeded; nothing comes back."""
        return self._move_action(event_id, (ISSUING,), {
            "status": SUCCEEDED, "done_at": to_db(done_at or utcnow()),
            "reason": detail[:2000] or None})

    def mark_action_failed(self, event_id: str, reason: str,
                           done_at: Optional[datetime] = None) -> Optional[dict[str, Any]]:
        return self._move_action(event_id, (WAITING, ISSUING, ISSUED), {
            "status": FAILED, "reason": reason[:2000], "done_at": to_db(done_at or utcnow())})

    def get_action(self, event_id: str) -> Optional[dict[str, Any]]:
        with self.engine.connect() as conn:
            row = conn.execute(select(actions).where(actions.c.event_id == event_id)
                               ).mappings().first()
            return _action_dict(row) if row is not None else None

    def instances_with_open_actions(self, uuids: list[str]) -> set[str]:
        """Which of ``uuids`` wait for their guest after an action."""
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(uuids), 500):  # bounded IN lists
                out.update(r.instance_uuid for r in conn.execute(
                    select(actions.c.instance_uuid).where(
                        actions.c.instance_uuid.in_(uuids[i:i + 500]),
                        actions.c.status.in_(OPEN_ACTIONS)).distinct()))
        return out

    def mark_recovered(self, instance_uuid: str, at: datetime) -> Optional[dict[str, Any]]:
        """The instance heartbeats again at ``at`` (its compute's clock): the
        first action asked for it before then has succeeded. recovery_ms:
        ``at`` − the fault's detected_at (both the compute's clock)."""
        at_db = to_db(at)
        with self.engine.begin() as conn:
            row = conn.execute(select(actions).where(
                actions.c.instance_uuid == instance_uuid,
                actions.c.status.in_(OPEN_ACTIONS), actions.c.issued_at <= at_db,
            ).order_by(actions.c.issued_at, actions.c.event_id).limit(1).with_for_update()
            ).mappings().first()
            if row is None:
                return None
            detected = conn.execute(select(events.c.detected_at).where(
                events.c.id == row["event_id"])).scalar()
            ms = None
            if detected is not None:
                ms = max(0, round((at_db - detected).total_seconds() * 1000))
            conn.execute(update(actions).where(actions.c.event_id == row["event_id"]).values(
                status=SUCCEEDED, recovered_at=at_db, recovery_ms=ms))
            out = conn.execute(select(actions).where(actions.c.event_id == row["event_id"])
                               ).mappings().one()
            return _action_dict(out)

    def fail_unrecovered(self, issued_before: datetime, reason: str) -> list[dict[str, Any]]:
        """Actions asked for before ``issued_before`` whose guest never came
        back: issued ones, and issuing ones never confirmed (a host that no
        longer answers would keep their delivery asking for ever). Returns
        the ones this call moved (another controller may sweep too)."""
        cutoff = to_db(issued_before)
        with self.engine.connect() as conn:
            ids = [r.event_id for r in conn.execute(select(actions.c.event_id).where(
                actions.c.status.in_(OPEN_ACTIONS), actions.c.issued_at < cutoff))]
        out = []
        for event_id in ids:
            rec = self._move_action(event_id, OPEN_ACTIONS, {
                "status": FAILED, "reason": reason[:2000], "done_at": to_db(utcnow())})
            if rec is not None:
                out.append(rec)
        return out

    def get_recovery(self, instance_uuid: str) -> Optional[dict[str, Any]]:
        with self.engine.connect() as conn:
            row = conn.execute(select(recovery).where(
                recovery.c.instance_uuid == instance_uuid)).mappings().first()
            return _recovery_dict(row) if row is not None else None

    def set_recovery_paused(self, instance_uuid: str, paused: bool, reason: str = "",
                            at: Optional[datetime] = None) -> dict[str, Any]:
        now = to_db(at or utcnow())
        _ensure_recovery(self.engine, instance_uuid, now)
        with self.engine.begin() as conn:
            _locked_recovery(conn, instance_uuid, now)
            conn.execute(update(recovery).where(recovery.c.instance_uuid == instance_uuid)
                         .values(paused=paused, paused_reason=(reason[:2000] or None),
                                 updated_at=now))
            return _recovery_dict(conn.execute(select(recovery).where(
                recovery.c.instance_uuid == instance_uuid)).mappings().one())

    def rearm_recovery(self, instance_uuid: str, at: Optional[datetime] = None
                       ) -> dict[str, Any]:
        """Clear the exhausted mark and the counted actions."""
        now = to_db(at or utcnow())
        _ensure_recovery(self.engine, instance_uuid, now)
        with self.engine.begin() as conn:
            _locked_recovery(conn, instance_uuid, now)
            conn.execute(update(recovery).where(recovery.c.instance_uuid == instance_uuid)
                         .values(exhausted=False, exhausted_at=None, action_times=[],
                                 updated_at=now))
            return _recovery_dict(conn.execute(select(recovery).where(
                recovery.c.instance_uuid == instance_uuid)).mappings().one())


def _from_epoch(t: float) -> datetime:
    return to_db(datetime.fromtimestamp(t, timezone.utc))


def _times(value: Any) -> list[float]:
    if isinstance(value, str):  # some drivers hand JSON back as text
        value = json.loads(value)
    return [float(t) for t in (value or [])]


def _locked_recovery(conn: Connection, uuid: str, now: datetime) -> Any:
    """The instance's recovery row (made by _ensure_recovery beforehand),
    locked until commit."""
    return conn.execute(select(recovery).where(recovery.c.instance_uuid == uuid)
                        .with_for_update()).mappings().one()


def _ensure_recovery(engine: Engine, uuid: str, now: datetime) -> None:
    """Make the instance's recovery row if missing, in a transaction of its
    own: inserting it under a lock taken on the missing row would deadlock
    two controllers on MariaDB (both hold the gap lock, both insert)."""
    with engine.connect() as conn:
        if conn.execute(select(recovery.c.instance_uuid).where(
                recovery.c.instance_uuid == uuid)).first() is not None:
            return
    try:
        with engine.begin() as conn:
            conn.execute(insert(recovery).values(
                instance_uuid=uuid, action_times=[], paused=False, exhausted=False,
                updated_at=to_db(now)))
    except IntegrityError:  # another controller made it meanwhile
        pass


def _put_action(conn: Connection, event_id: str, exists: bool, values: dict[str, Any]) -> None:
    if exists:
        conn.execute(update(actions).where(actions.c.event_id == event_id).values(**values))
    else:
        conn.execute(insert(actions).values(event_id=event_id, **values))


def _action_dict(r: Any) -> dict[str, Any]:
    return {"event_id": r["event_id"], "instance_uuid": r["instance_uuid"], "mode": r["mode"],
            "action": r["action"], "status": r["status"], "reason": r["reason"],
            "issued_at": iso(r["issued_at"]), "done_at": iso(r["done_at"]),
            "recovered_at": iso(r["recovered_at"]), "recovery_ms": r["recovery_ms"]}


def _recovery_dict(r: Any) -> dict[str, Any]:
    times = _times(r["action_times"])
    return {"instance_uuid": r["instance_uuid"], "paused": bool(r["paused"]),
            "paused_reason": r["paused_reason"], "exhausted": bool(r["exhausted"]),
            "exhausted_at": iso(r["exhausted_at"]),
            "action_times": [iso(datetime.fromtimestamp(t, timezone.utc)) for t in times],
            "updated_at": iso(r["updated_at"])}


def _add_missing_columns(conn: Connection) -> None:
    """A store made before migrations existed lacks tables and nullable
    columns added later: add them, so it is at the baseline
    (migrations/versions/0001) and can be stamped."""
    metadata.create_all(conn)
    insp = inspect(conn)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name not in have and col.nullable:
                kind = col.type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {col.name} {kind}"))


def _instance_dict(r: Any) -> dict[str, Any]:
    facts = r["facts"]
    if isinstance(facts, str):  # some drivers hand JSON back as text
        facts = json.loads(facts)
    return {
        "uuid": r["uuid"], "host": r["host"], "name": r["name"],
        "heartbeat": {"state": r["state"], "health": r["health"],
                      "interval_ms": r["interval_ms"]},
        "corrective_action": r["corrective_action"], "facts": facts or {},
        "state_at": iso(r["state_at"]), "updated_at": iso(r["updated_at"]),
    }


def _new_event_dict(row: dict[str, Any], sink_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An event just inserted (``row``) with its new pending deliveries, as
    ``Store.get_event`` would read it back (see ``_reads_back_as_written``)."""
    mono = row["detected_mono"]
    return {
        "id": row["id"], "instance_uuid": row["instance_uuid"], "host": row["host"],
        "kind": row["kind"], "corrective_action": row["corrective_action"],
        "detail": row["detail"], "detected_at": iso(row["detected_at"]),
        "detected_mono": None if mono is None else float(mono),
        "received_at": iso(row["received_at"]),
        "deliveries": [{"sink": d["sink"], "status": PENDING, "attempts": 0,
                        "last_error": None, "note": None, "delivered_at": None}
                       for d in sorted(sink_rows, key=lambda d: d["sink"])],
        "action": None,  # made by the recovery sink, once it has the event
    }
