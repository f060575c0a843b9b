"""The store on SQLite, PostgreSQL and MariaDB: faults with their
deliveries in one commit, idempotent ids, final delivery states, event
order and ?since=, out-of-order instance updates."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event

from nfvha.controller import validate
from nfvha.controller.store import Store
from tests.test_controller_helpers import db_urls, fault


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request, tmp_path):
    gen = db_urls(request, tmp_path)
    url = next(gen)
    s = Store(url)
    yield s
    s.close()
    gen.close()


def t0() -> datetime:
    return datetime(2026, 11, 24, 3, 0, 0, 123456, tzinfo=timezone.utc)


def test_fault_is_committed_with_one_pending_delivery_per_sink(store):
    ev = validate.fault_event(fault())
    stored, created = store.record_fault(ev, ["masakari", "webhook"], received_at=t0())
    assert created
    assert [d["sink"] for d in stored["deliveries"]] == ["masakari", "webhook"]
    assert {d["status"] for d in stored["deliveries"]} == {"pending"}
    assert stored["received_at"] == "2026-11-24T03:00:00.123456+00:00"
    # microseconds survive every backend (MariaDB needs DATETIME(6))
    assert stored["detected_at"] == ev["detected_at"].isoformat(timespec="microseconds")
    pend = store.pending_deliveries()
    assert [(e["id"], s, a) for e, s, a in pend] == [(ev["id"], "masakari", 0),
                                                     (ev["id"], "webhook", 0)]


@pytest.mark.parametrize("sinks", [
    ["webhook", "masakari", "log", "recovery2"],
    ["Web-Hook", "log_2", "b", "A", "a-b", "ab"],  # orders by collation on a server
    [],
])
@pytest.mark.parametrize("mono", [123.5, 5, 1733212345.1234567, None])
def test_a_new_fault_is_returned_as_the_store_reads_it_back(store, sinks, mono):
    ev = validate.fault_event(fault(detected_mono=mono, detail="ünïcode ✓\ttab",
                                    detected_at="2026-12-03T08:00:00.000001+02:00"))
    stored, created = store.record_fault(ev, sinks, received_at=t0())
    assert created
    again = store.get_event(ev["id"])
    assert stored == again
    assert json.dumps(stored) == json.dumps(again)  # 5 and 5.0 alike


def test_a_new_fault_on_sqlite_costs_its_inserts_and_no_read(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/nfvha.sqlite")
    statements: list[str] = []
    event.listen(s.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *rest: statements.append(sql.split()[0].upper()))
    try:
        s.record_fault(validate.fault_event(fault()), ["log", "webhook"])
        assert statements == ["INSERT", "INSERT"]
    finally:
        s.close()


def test_duplicate_event_id_writes_nothing_and_returns_the_stored_event(store):
    raw = fault()
    first, created = store.record_fault(validate.fault_event(raw), ["log"])
    again, created2 = store.record_fault(
        validate.fault_event({**raw, "detail": "retry with other text"}), ["log", "webhook"])
    assert created and not created2
    assert again["detail"] == first["detail"]
    assert len(store.list_events()) == 1
    assert len(store.pending_deliveries()) == 1


def test_a_finished_delivery_never_goes_back(store):
    ev = validate.fault_event(fault())
    store.record_fault(ev, ["a", "b"])
    assert store.mark_failed_attempt(ev["id"], "a", "HTTP 503")
    assert store.mark_delivered(ev["id"], "a", note="ok", at=t0())
    assert store.mark_rejected(ev["id"], "b", "HTTP 409")
    # late writers (another controller, a stale task) change nothing
    assert not store.mark_failed_attempt(ev["id"], "a", "late")
    assert not store.mark_delivered(ev["id"], "b")
    d = {x["sink"]: x for x in store.get_event(ev["id"])["deliveries"]}
    assert d["a"] == {"sink": "a", "status": "delivered", "attempts": 2,
                      "last_error": "HTTP 503", "note": "ok",
                      "delivered_at": "2026-11-24T03:00:00.123456+00:00"}
    assert d["b"]["status"] == "rejected" and d["b"]["attempts"] == 1
    assert store.pending_deliveries() == []


def test_events_come_newest_last_and_since_filters_by_arrival(store):
    ids = []
    for i in range(5):
        ev = validate.fault_event(fault())
        ids.append(ev["id"])
        store.record_fault(ev, ["log"], received_at=t0() + timedelta(seconds=i))
    assert [e["id"] for e in store.list_events()] == ids
    assert [e["id"] for e in store.list_events(limit=2)] == ids[-2:]
    since = t0() + timedelta(seconds=2)
    assert [e["id"] for e in store.list_events(since=since)] == ids[3:]
    assert [e["id"] for e in store.list_events(since=t0() - timedelta(seconds=1),
                                               limit=2)] == ids[:2]


def test_an_overtaken_instance_update_is_ignored_a_clock_step_is_not(store):
    rec = validate.instance_record("compute-1", {
        "instance_uuid": "u1", "state": "enabled", "health": "healthy", "interval_ms": 1000,
        "corrective_action": "reboot", "name": "vm-1",
        "at": (t0() + timedelta(seconds=5)).isoformat(), "vote_secs": 10})
    assert store.upsert_instance(rec)
    stale = validate.instance_record("compute-1", {
        "instance_uuid": "u1", "state": "failed", "at": (t0() + timedelta(seconds=4)).isoformat()})
    assert not store.upsert_instance(stale)
    newer = validate.instance_record("compute-1", {
        "instance_uuid": "u1", "state": "failed", "health": None, "interval_ms": 1000,
        "at": (t0() + timedelta(seconds=6)).isoformat()})
    assert store.upsert_instance(newer)
    inst = store.get_instance("u1")
    assert inst["heartbeat"] == {"state": "failed", "health": None, "interval_ms": 1000}
    assert inst["name"] == "vm-1"  # a state change need not repeat the name
    assert inst["facts"] == {}
    assert store.get_instance("nope") is None
    # a minute older: the compute's clock stepped back; applied, not frozen out
    stepped = validate.instance_record("compute-1", {
        "instance_uuid": "u1", "state": "enabled", "at": (t0() - timedelta(minutes=1)).isoformat()})
    assert store.upsert_instance(stepped)
    assert store.get_instance("u1")["heartbeat"]["state"] == "enabled"


def test_hello_forgets_instances_the_host_no_longer_reports(store):
    for uuid, host in (("a", "c1"), ("b", "c1"), ("c", "c2")):
        store.upsert_instance(validate.instance_record(host, {"uuid": uuid, "state": "enabled"}))
    assert store.forget_host_instances_except("c1", ["a"]) == 1
    assert sorted(i["uuid"] for i in store.list_instances()) == ["a", "c"]
    assert store.forget_host_instances_except("c1", []) == 1
    assert [i["uuid"] for i in store.list_instances()] == ["c"]


def test_a_store_from_before_the_lease_columns_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE deliveries (event_id VARCHAR(64) NOT NULL, sink VARCHAR(64) "
               "NOT NULL, status VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL, "
               "last_error TEXT, note TEXT, delivered_at DATETIME, "
               "PRIMARY KEY (event_id, sink))")
    db.commit()
    db.close()
    s = Store(f"sqlite:///{path}")
    try:
        ev = validate.fault_event(fault())
        s.record_fault(ev, ["log"], owner="me", lease_until=t0())
        assert [e["id"] for e, _, _ in s.claim_pending("me", t0(), t0())] == [ev["id"]]
    finally:
        s.close()
