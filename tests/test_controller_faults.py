"""Controller fault handling: stored before reported, idempotent retries,
hostile or broken input, retries with backoff, final rejections, sinks
independent of each other, the bus endpoint over the in-process bus."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import pytest

from nfvha.bus import make_bus
from nfvha.controller import Controller
from nfvha.controller.reporters import Reject, Retry
from nfvha.controller.reporters.webhook import WebhookReporter
from nfvha.controller.store import Store
from nfvha.standins.webhook import WebhookStandin
from tests.test_controller_helpers import fault


class Recording:
    """A sink that records calls and does what it is told per call."""

    def __init__(self, name: str, script: Optional[list[Any]] = None) -> None:
        self.name = name
        self.calls: list[dict[str, Any]] = []
        self.script = list(script or [])  # items: None (ack), an exception, or a coroutine fn

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        self.calls.append(event)
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            if callable(step):
                return await step(event)
        return None


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path}/c.sqlite"


async def started(db_url: str, reporters: list[Any], **kw: Any) -> Controller:
    c = Controller(db_url, reporters, retry_base_s=kw.pop("retry_base_s", 0.02),
                   retry_max_s=kw.pop("retry_max_s", 0.2), **kw)
    await c.start()
    return c


async def test_fault_is_stored_before_any_sink_hears_of_it(db_url):
    seen: list[tuple[bool, str]] = []
    probe = Store(db_url)  # a second connection: sees only what was committed

    async def check(event):
        stored = probe.get_event(event["id"])
        seen.append((stored is not None, stored and stored["deliveries"][0]["status"]))

    sink = Recording("probe", [check])
    c = await started(db_url, [sink])
    try:
        ack = await c.fault(fault())
        await c.wait_idle(5)
    finally:
        await c.stop()
        probe.close()
    assert ack["ok"] is True
    assert seen == [(True, "pending")]


async def test_fault_is_acked_while_a_sink_is_still_busy(db_url):
    gate = asyncio.Event()

    async def hang(event):
        await gate.wait()

    c = await started(db_url, [Recording("slow", [hang])])
    try:
        ev = fault()
        ack = await asyncio.wait_for(c.fault(ev), 5)
        assert ack == {"ok": True, "id": ev["id"]}
        stored = await c.get_event(ev["id"])
        assert stored["deliveries"][0]["status"] == "pending"
        gate.set()
        await c.wait_idle(5)
        stored = await c.get_event(ev["id"])
        assert stored["deliveries"][0]["status"] == "delivered"
    finally:
        await c.stop()


async def test_a_retried_fault_is_acked_without_a_second_event(db_url):
    sink = Recording("s")
    c = await started(db_url, [sink])
    try:
        ev = fault()
        acks = [await c.fault(dict(ev)) for _ in range(3)]
        await c.wait_idle(5)
        events = await c.list_events()
    finally:
        await c.stop()
    assert [a["ok"] for a in acks] == [True, True, True]
    assert [a.get("duplicate", False) for a in acks] == [False, True, True]
    assert len(events) == 1 and len(sink.calls) == 1
    assert c.metrics.duplicates._value.get() == 2


@pytest.mark.parametrize("bad", [
    "not a dict",
    None,
    {},
    {"id": "x"},
    fault(id=""),
    fault(id="x" * 65),
    fault(id=12),
    fault(host=None),
    fault(detected_at="yesterday"),
    fault(detected_at=None),
    fault(kind={"nested": "object"}),
])
async def test_malformed_fault_gets_a_clear_error_and_stores_nothing(db_url, bad):
    sink = Recording("s")
    c = await started(db_url, [sink])
    try:
        ack = await c.fault(bad)
        assert ack["ok"] is False and ack["error"]
        assert await c.list_events() == []
        good = await c.fault(fault())  # the controller is unharmed
        assert good["ok"] is True
        await c.wait_idle(5)
    finally:
        await c.stop()
    assert len(sink.calls) == 1


async def test_oversized_detail_is_cut_not_lost(db_url):
    c = await started(db_url, [Recording("s")])
    try:
        ev = fault(detail="x" * 100_000, corrective_action=None)
        assert (await c.fault(ev))["ok"]
        stored = await c.get_event(ev["id"])
    finally:
        await c.stop()
    assert len(stored["detail"]) == 4096
    assert stored["corrective_action"] == "unknown"


async def test_sink_is_retried_with_growing_delays_until_it_recovers(db_url):
    async with WebhookStandin() as hook:
        hook.fail_next(4)
        c = await started(db_url, [WebhookReporter(hook.url + "/f")], retry_base_s=0.05,
                          retry_max_s=5.0)
        try:
            ev = fault()
            await c.fault(ev)
            await hook.wait_received(1, timeout=10)
            await c.wait_idle(5)
            stored = await c.get_event(ev["id"])
        finally:
            await c.stop()
    d = stored["deliveries"][0]
    assert d["status"] == "delivered" and d["attempts"] == 5
    assert d["last_error"].startswith("HTTP 503")
    assert len(hook.attempts) == 5 and len(hook.received) == 1
    assert c.metrics.failures.labels("webhook", "false")._value.get() == 4


async def test_backoff_waits_are_at_least_the_jitter_floor(db_url):
    stamps: list[float] = []

    async def fail(event):
        stamps.append(time.monotonic())
        raise Retry("down")

    async def ok(event):
        stamps.append(time.monotonic())

    sink = Recording("s", [fail, fail, fail, ok])
    c = await started(db_url, [sink], retry_base_s=0.04, retry_max_s=10.0)
    try:
        await c.fault(fault())
        await c.wait_idle(10)
    finally:
        await c.stop()
    # equal jitter: the k-th wait is at least base * 2**(k-1) / 2
    # (lower bounds only: a loaded machine may be slower, never faster)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert len(gaps) == 3
    for k, gap in enumerate(gaps, start=1):
        assert gap >= 0.04 * 2 ** (k - 1) / 2 - 0.005, gaps


async def test_a_rejection_is_final(db_url):
    sink = Recording("s", [Reject("HTTP 400: bad")])
    c = await started(db_url, [sink])
    try:
        ev = fault()
        await c.fault(ev)
        await c.wait_idle(5)
        await asyncio.sleep(0.1)
        stored = await c.get_event(ev["id"])
    finally:
        await c.stop()
    assert len(sink.calls) == 1
    assert stored["deliveries"][0] | {"delivered_at": None} == {
        "sink": "s", "status": "rejected", "attempts": 1, "last_error": "HTTP 400: bad",
        "note": None, "delivered_at": None}


async def test_one_dead_sink_does_not_delay_the_others(db_url):
    dead = Recording("dead", [Retry("down")] * 1000)
    fine = Recording("fine")
    c = await started(db_url, [dead, fine])
    try:
        evs = [fault() for _ in range(10)]
        for ev in evs:
            await c.fault(ev)
        for _ in range(200):
            if len(fine.calls) == 10:
                break
            await asyncio.sleep(0.01)
        stored = await c.list_events()
    finally:
        await c.stop()
    assert len(fine.calls) == 10
    for e in stored:
        d = {x["sink"]: x["status"] for x in e["deliveries"]}
        assert d == {"dead": "pending", "fine": "delivered"}


async def test_a_crashing_or_hanging_reporter_is_retried_not_fatal(db_url):
    async def hang(event):
        await asyncio.sleep(3600)

    sink = Recording("s", [RuntimeError("bug in reporter"), hang, None])
    c = await started(db_url, [sink], attempt_timeout_s=0.2)
    try:
        ev = fault()
        await c.fault(ev)
        await c.wait_idle(10)
        stored = await c.get_event(ev["id"])
    finally:
        await c.stop()
    d = stored["deliveries"][0]
    assert d["status"] == "delivered" and d["attempts"] == 3
    assert "timeout" in d["last_error"]


async def test_stop_leaves_unfinished_deliveries_pending(db_url):
    sink = Recording("s", [Retry("down")] * 1000)
    c = await started(db_url, [sink])
    ev = fault()
    await c.fault(ev)
    for _ in range(500):  # second call = the first failure was written
        if len(sink.calls) >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.wait_for(c.stop(), 5)
    s = Store(db_url)
    try:
        pend = s.pending_deliveries()
    finally:
        s.close()
    assert [(e["id"], sink_) for e, sink_, _ in pend] == [(ev["id"], "s")]
    assert pend[0][2] >= 1


async def test_instance_reports_and_hello(db_url):
    c = await started(db_url, [Recording("s")])
    try:
        r = await c.instance_state(host="c1", instance_uuid="u1", state="enabled",
                                   health="healthy", interval_ms=500,
                                   corrective_action="reboot", name="vm-1",
                                   at="2026-11-24T03:00:00.000001Z", vote_secs=8)
        assert r == {"ok": True, "applied": True}
        bad = await c.instance_state(host="c1", instance_uuid="u1", state="exploded")
        assert bad["ok"] is False and "state" in bad["error"]
        h = await c.hello(host="c1", instances=[
            {"instance_uuid": "u2", "state": "waiting", "name": "vm-2"},
            {"instance_uuid": "u3", "state": "bogus"}, "junk"])
        assert h["ok"] is False and h["instances"] == 1 and len(h["errors"]) == 2
        insts = await c.list_instances()
        assert [i["uuid"] for i in insts] == ["u2"]  # u1 no longer on c1
        assert (await c.hello(host="c1", instances="nope"))["ok"] is False
    finally:
        await c.stop()


async def test_the_bus_endpoint_through_the_inproc_bus(db_url):
    sink = Recording("s")
    bus = make_bus("inproc://")
    await bus.start()
    c = await started(db_url, [sink], bus=bus)
    await bus.serve_controller(c)
    try:
        await bus.call_controller("hello", host="c1", instances=[])
        await bus.cast_controller("instance_state", host="c1", instance_uuid="u1",
                                  state="enabled", health="healthy", interval_ms=1000,
                                  corrective_action="reboot", name="vm-1",
                                  at="2026-11-24T03:00:00.000001+00:00")
        ev = fault(instance_uuid="u1", host="c1")
        ack = await bus.call_controller("fault", event=ev)
        again = await bus.call_controller("fault", event=ev)
        await c.wait_idle(5)
        for _ in range(100):
            if await c.get_instance("u1"):
                break
            await asyncio.sleep(0.01)
        inst = await c.get_instance("u1")
    finally:
        await c.stop()
        await bus.stop()
    assert ack == {"ok": True, "id": ev["id"]} and again["duplicate"] is True
    assert inst["heartbeat"]["state"] == "enabled"
    assert [e["id"] for e in sink.calls] == [ev["id"]]


async def test_hostile_instance_reports_are_bounded_or_refused(db_url):
    c = await started(db_url, [Recording("s")])
    try:
        many = {f"k{i}": "v" * 10_000 for i in range(1000)}
        r = await c.instance_state(host="c1", instance_uuid="u1", state="enabled",
                                   nested={"a": [1, 2]}, **many)
        assert r["ok"] is True
        inst = await c.get_instance("u1")
        assert len(inst["facts"]) == 32
        assert all(len(v) == 255 for v in inst["facts"].values())
        for bad in ({"interval_ms": "fast"}, {"interval_ms": True}, {"interval_ms": -1},
                    {"health": "meh"}, {"name": "n" * 300}, {"at": "soon"},
                    {"instance_uuid": "u" * 65}, {"corrective_action": ["reboot"]}):
            kw = {"host": "c1", "instance_uuid": "u1", "state": "enabled", **bad}
            r = await c.instance_state(**kw)
            assert r["ok"] is False and r["error"], bad
        assert (await c.instance_state(host="", instance_uuid="u1", state="enabled"))[
            "ok"] is False
        # replayed old state: ignored, not applied
        new = await c.instance_state(host="c1", instance_uuid="u2", state="failed",
                                     at="2026-11-24T03:00:02Z")
        old = await c.instance_state(host="c1", instance_uuid="u2", state="enabled",
                                     at="2026-11-24T03:00:01Z")
        assert new["applied"] is True and old["applied"] is False
        assert (await c.get_instance("u2"))["heartbeat"]["state"] == "failed"
    finally:
        await c.stop()
