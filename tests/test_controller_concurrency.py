"""Many faults at once, the same fault retried concurrently, and two
controllers sharing one database: every fault stored once, delivered once."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from nfvha.controller import Controller
from tests.test_controller_helpers import db_urls, fault


class Counting:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ids: Counter[str] = Counter()

    async def deliver(self, event):
        self.ids[event["id"]] += 1
        await asyncio.sleep(0.001)
        return None


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request, tmp_path):
    gen = db_urls(request, tmp_path)
    yield next(gen)
    gen.close()


async def test_a_flood_of_faults_is_stored_and_delivered_once_each(db_url):
    sink = Counting("s")
    c = Controller(db_url, [sink])
    await c.start()
    try:
        evs = [fault() for _ in range(300)]
        acks = await asyncio.gather(*(c.fault(ev) for ev in evs))
        await c.wait_idle(60)
        stored = await c.list_events(limit=1000)
    finally:
        await c.stop()
    assert all(a["ok"] for a in acks)
    assert {e["id"] for e in stored} == {e["id"] for e in evs}
    assert set(sink.ids) == {e["id"] for e in evs} and set(sink.ids.values()) == {1}


async def test_concurrent_retries_of_one_fault_make_one_event(db_url):
    sink = Counting("s")
    c = Controller(db_url, [sink])
    await c.start()
    try:
        ev = fault()
        acks = await asyncio.gather(*(c.fault(dict(ev)) for _ in range(40)))
        await c.wait_idle(30)
        stored = await c.list_events()
    finally:
        await c.stop()
    assert all(a["ok"] and a["id"] == ev["id"] for a in acks)
    assert sum(1 for a in acks if not a.get("duplicate")) == 1
    assert len(stored) == 1 and sink.ids == Counter({ev["id"]: 1})


async def test_two_controllers_on_one_store_deliver_a_retried_fault_once(db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("several controllers share a server database, not a SQLite file")
    a_sink, b_sink = Counting("s"), Counting("s")
    a = Controller(db_url, [a_sink], controller_id="ctl-a")
    b = Controller(db_url, [b_sink], controller_id="ctl-b")
    await a.start()
    await b.start()
    try:
        evs = [fault() for _ in range(50)]
        # the compute's retry of each fault lands on the other controller
        await asyncio.gather(*(a.fault(dict(ev)) for ev in evs),
                             *(b.fault(dict(ev)) for ev in evs))
        await a.wait_idle(30)
        await b.wait_idle(30)
        stored = await a.list_events(limit=1000)
    finally:
        await a.stop()
        await b.stop()
    total = a_sink.ids + b_sink.ids
    assert set(total) == {e["id"] for e in evs} and set(total.values()) == {1}
    assert all(d["status"] == "delivered" for e in stored for d in e["deliveries"])
