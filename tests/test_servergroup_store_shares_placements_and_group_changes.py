"""What controllers on one database share of server groups beyond the groups
themselves (nfvha/controller/servergroup_store.py), on SQLite, PostgreSQL
and MariaDB: the placement each compute host last announced (written by
every controller that heard it: two writing one row at once never fail),
and a fingerprint of the REST groups that changes with every write and
delete; a restarted controller routes from the stored placement at once."""
from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import until

from nfvha.controller import servergroup_store as sgstore
from nfvha.controller.servergroup_service import ServerGroupService
from nfvha.controller.store import Store
from tests.test_controller_helpers import db_urls

U = "6c1a8e36-2f43-4bf5-9d0e-5d1b2f6a7c10"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request, tmp_path):
    gen = db_urls(request, tmp_path)
    s = Store(next(gen))
    yield s
    s.close()
    gen.close()


def test_a_hosts_placement_is_replaced_and_a_moved_vm_stays_with_its_new_host(
        store: Store) -> None:
    e = store.engine
    sgstore.save_host_placements(e, "h1", {"a": None, "b": U}, [])
    sgstore.save_host_placements(e, "h2", {"c": None}, [])
    assert sgstore.load_placements(e) == [("a", "h1", None), ("b", "h1", U), ("c", "h2", None)]
    # "b" moved to h2 (announced there first), then h1's list no longer has it
    sgstore.save_host_placements(e, "h2", {"b": U}, [])
    sgstore.save_host_placements(e, "h1", {}, ["b"])
    assert sgstore.load_placements(e) == [("a", "h1", None), ("b", "h2", U), ("c", "h2", None)]
    sgstore.save_host_placements(e, "h1", {}, ["a"])
    assert [p[0] for p in sgstore.load_placements(e)] == ["b", "c"]


def test_controllers_writing_the_same_placement_at_once_never_fail(store: Store) -> None:
    errors: list[BaseException] = []
    rows = {f"vm-{i}": None for i in range(50)}

    def write() -> None:
        try:
            for _ in range(5):
                sgstore.save_host_placements(store.engine, "h1", rows, [])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(sgstore.load_placements(store.engine)) == 50


def test_the_groups_fingerprint_changes_with_every_write_and_delete(store: Store) -> None:
    seen = [sgstore.groups_fingerprint(store.engine)]
    store.put_server_group("g1", "", ["a", "b"])
    seen.append(sgstore.groups_fingerprint(store.engine))
    assert sgstore.groups_fingerprint(store.engine) == seen[-1]  # nothing written: same
    store.put_server_group("g1", "", ["a", "b", "c"])
    seen.append(sgstore.groups_fingerprint(store.engine))
    store.put_server_group("g2", "", ["x"])
    seen.append(sgstore.groups_fingerprint(store.engine))
    store.delete_server_group("g1")
    seen.append(sgstore.groups_fingerprint(store.engine))
    assert len(set(seen)) == len(seen), seen


async def test_a_restarted_controller_routes_from_stored_placement_and_keeps_its_links(
        tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")

    async def db(fn, *args):
        return await asyncio.to_thread(fn, *args)

    first = ServerGroupService(None)
    await first.start(store, db)
    try:
        await first.sg_instances("h1", ["n1", "n2"])
        await first.sg_links("h1", {"n1": U})
        await until(lambda: sorted(sgstore.load_placements(store.engine)) == [
            ("n1", "h1", U), ("n2", "h1", None)])
    finally:
        await first.stop()
    again = ServerGroupService(None)
    await again.start(store, db)  # what a restarted controller has before it serves
    try:
        again.groups.set_group("g", "", [U, "n2"])
        assert again.groups.route_broadcast("n2", "hi") == {"h1": ["n1"]}
        # the host's next list (its links follow in their own message) is
        # what the store has: nothing to write, the link is not dropped
        await again.sg_instances("h1", ["n1", "n2"])
        assert not again._unsaved
    finally:
        await again.stop()
        store.close()
