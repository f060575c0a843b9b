"""Several controllers on one store: a dead controller's pending deliveries
are taken over when its leases run out, an orderly stop hands them over at
once, and a live controller's deliveries are never taken."""
from __future__ import annotations

import asyncio

import pytest

from nfvha.controller import Controller
from nfvha.controller.reporters import Retry
from tests.test_controller_helpers import db_urls, fault


class Sink:
    def __init__(self, name: str, up: bool) -> None:
        self.name = name
        self.up = up
        self.ids: list[str] = []

    async def deliver(self, event):
        if not self.up:
            raise Retry("down")
        self.ids.append(event["id"])
        return None


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request, tmp_path):
    gen = db_urls(request, tmp_path)
    yield next(gen)
    gen.close()


def ctl(db_url: str, sink: Sink, cid: str, lease_s: float) -> Controller:
    return Controller(db_url, [sink], controller_id=cid, lease_s=lease_s,
                      retry_base_s=0.02, retry_max_s=0.1)


async def wait_for(pred, timeout: float) -> bool:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


async def test_a_dead_controllers_deliveries_are_taken_over_after_its_lease(db_url):
    a_sink, b_sink = Sink("s", up=False), Sink("s", up=True)
    a = ctl(db_url, a_sink, "ctl-a", lease_s=1.0)
    await a.start()
    evs = [fault() for _ in range(5)]
    for ev in evs:
        await a.fault(ev)
    await a.stop(release_leases=False)  # as if killed: leases stay until they run out
    b = ctl(db_url, b_sink, "ctl-b", lease_s=1.0)
    await b.start()
    try:
        assert b_sink.ids == []  # a's leases are still valid when b starts
        assert await wait_for(lambda: len(b_sink.ids) == 5, 15)
        await b.wait_idle(10)
        stored = await b.list_events()
    finally:
        await b.stop()
    assert sorted(b_sink.ids) == sorted(e["id"] for e in evs)
    assert all(d["status"] == "delivered" for e in stored for d in e["deliveries"])


async def test_an_orderly_stop_hands_deliveries_over_at_once(db_url):
    a_sink, b_sink = Sink("s", up=False), Sink("s", up=True)
    a = ctl(db_url, a_sink, "ctl-a", lease_s=60.0)
    await a.start()
    ev = fault()
    await a.fault(ev)
    await a.stop()
    b = ctl(db_url, b_sink, "ctl-b", lease_s=60.0)
    await b.start()
    try:
        await b.wait_idle(10)  # far less than the 60 s lease
    finally:
        await b.stop()
    assert b_sink.ids == [ev["id"]]


async def test_a_live_controllers_deliveries_are_not_taken(db_url):
    a_sink, b_sink = Sink("s", up=False), Sink("s", up=True)
    a = ctl(db_url, a_sink, "ctl-a", lease_s=0.3)
    b = ctl(db_url, b_sink, "ctl-b", lease_s=0.3)
    await a.start()
    await b.start()
    try:
        await a.fault(fault())
        await asyncio.sleep(1.5)  # five lease periods: a renews, b must keep off
        assert b_sink.ids == []
        a_sink.up = True
        await a.wait_idle(10)
    finally:
        await a.stop()
        await b.stop()
    assert len(a_sink.ids) == 1 and b_sink.ids == []
