"""The store's schema comes from Alembic migrations (nfvha/controller/
migrations): a new database is migrated to the newest revision and then
matches store.py's tables exactly; a store made before migrations existed
is fixed up, stamped and kept with its data; controllers starting together
on one server database migrate it once, without tripping over each other."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from nfvha.controller import migrations, validate
from nfvha.controller.store import Store, metadata
from tests.test_controller_helpers import db_urls, fault


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request, tmp_path):
    gen = db_urls(request, tmp_path)
    yield next(gen)
    gen.close()


def _diff(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def test_a_new_database_is_migrated_to_what_store_py_describes(db_url: str) -> None:
    s = Store(db_url)
    try:
        assert migrations.current(s.engine) == migrations.head()
    finally:
        s.close()
    assert _diff(db_url) == []
    again = Store(db_url)          # opening a current store changes nothing
    try:
        assert migrations.current(again.engine) == migrations.head()
    finally:
        again.close()


def test_a_store_from_before_migrations_is_stamped_and_keeps_its_data(db_url: str) -> None:
    old = create_engine(db_url)
    metadata.create_all(old)       # what nfvha made before it had migrations
    old.dispose()
    s = Store(db_url)
    try:
        ev = validate.fault_event(fault())
        s.record_fault(ev, ["log"])
    finally:
        s.close()
    s = Store(db_url)
    try:
        assert migrations.current(s.engine) == migrations.head()
        assert [e["id"] for e in s.list_events()] == [ev["id"]]
    finally:
        s.close()
    assert _diff(db_url) == []


@pytest.mark.parametrize("db_url", ["postgresql", "mariadb"], indirect=True)
def test_controllers_starting_together_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []
    stores: list[Store] = []

    def open_store() -> None:
        try:
            stores.append(Store(db_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        assert len(stores) == 4
        assert migrations.current(stores[0].engine) == migrations.head()
        assert set(inspect(stores[0].engine).get_table_names()) >= {
            "alembic_version", "instances", "events", "deliveries", "server_groups"}
    finally:
        for s in stores:
            s.close()
