"""Bus input validators answer "invalid" with a reason, never raise (issue
13): hypothesis drives nfvha.controller.validate and the controller's bus
endpoints with hostile values; one bad item of a hello is refused alone;
every refusal is counted in nfvha_reports_invalid; nothing non-finite or
beyond 64 bits is stored, so the REST API can always show what was stored.

Invariants checked after every step of ControllerBusMachine: the store
holds exactly the instances the model accepted, with their last state; the
invalid counter equals the number of refusals the model expects."""
from __future__ import annotations

import asyncio
import json
import math
import tempfile
from datetime import datetime, timezone

import httpx
import pytest
from hostile import EDGE_NUMBERS, EDGE_TIMES, json_like, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nfvha.controller import Controller, validate
from nfvha.controller.api import make_app

FAULT_KEYS = ["id", "instance_uuid", "host", "kind", "corrective_action", "detail",
              "detected_at", "detected_mono"]
INSTANCE_KEYS = ["instance_uuid", "uuid", "state", "health", "interval_ms", "name",
                 "corrective_action", "at", "vote_secs", "shutdown_notice_secs"]
GOOD_TIME = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(8999, 1, 1),
                         timezones=st.just(timezone.utc)).map(lambda t: t.isoformat())

faults = record({
    "id": st.text(min_size=1, max_size=70), "instance_uuid": st.text(min_size=1, max_size=70),
    "host": st.sampled_from(["compute-1", "h" * 256]), "kind": st.just("heartbeat_loss"),
    "detected_at": st.one_of(GOOD_TIME, st.sampled_from(EDGE_TIMES)),
    "detected_mono": st.sampled_from(EDGE_NUMBERS)}, FAULT_KEYS)
instances = record({
    "instance_uuid": st.text(min_size=1, max_size=70),
    "state": st.sampled_from(sorted(validate.HEARTBEAT_STATES)),
    "health": st.sampled_from(["healthy", "unhealthy", None]),
    "interval_ms": st.one_of(st.integers(-5, 2**40), st.sampled_from(EDGE_NUMBERS)),
    "at": st.one_of(GOOD_TIME, st.sampled_from(EDGE_TIMES)),
    "vote_secs": st.sampled_from(EDGE_NUMBERS)}, INSTANCE_KEYS)
hosts = st.one_of(st.sampled_from(["compute-1", "compute-2"]), json_like(max_leaves=3))
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _json_safe(value) -> None:
    """What the store keeps must go through strict JSON (the REST API's)."""
    json.dumps(value, allow_nan=False, default=str)


@FAST
@given(json_like(FAULT_KEYS) | faults)
def test_fault_event_refuses_or_returns_a_storable_event(ev):
    try:
        out = validate.fault_event(ev)
    except validate.Invalid as exc:
        assert str(exc)
        return
    assert validate.EARLIEST <= out["detected_at"] < validate.LATEST
    assert out["detected_mono"] is None or math.isfinite(out["detected_mono"])
    assert all(isinstance(out[k], str) and out[k] for k in ("id", "instance_uuid", "host"))
    assert len(out["detail"]) <= validate.MAX_DETAIL
    _json_safe(out)


@FAST
@given(hosts, json_like(INSTANCE_KEYS) | instances)
def test_instance_record_refuses_or_returns_a_storable_record(host, rec):
    try:
        out = validate.instance_record(host, rec)
    except validate.Invalid as exc:
        assert str(exc)
        return
    assert out["state"] in validate.HEARTBEAT_STATES
    assert out["interval_ms"] is None or 0 <= out["interval_ms"] <= validate.MAX_INTERVAL_MS
    assert out["at"] is None or validate.EARLIEST <= out["at"] < validate.LATEST
    assert len(out["facts"]) <= validate.MAX_FACTS
    for v in out["facts"].values():
        assert not isinstance(v, (list, dict))
        if isinstance(v, float):
            assert math.isfinite(v)
        elif isinstance(v, int) and not isinstance(v, bool):  # a bool fact is kept as is
            assert validate.int64(v)
    _json_safe(out)


@FAST
@given(hosts, json_like(max_leaves=3), json_like(max_leaves=3))
def test_sync_report_refuses_with_a_reason(host, count, digest):
    try:
        validate.sync_report(host, count, digest)
    except validate.Invalid as exc:
        assert str(exc)


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                   "0001-01-01", "9999-12-31T00:00:00"])
def test_timestamps_at_the_edges_of_the_range_are_refused(stamp):
    with pytest.raises(validate.Invalid, match="detected_at"):
        validate.fault_event({"id": "e", "instance_uuid": "u", "host": "h", "kind": "k",
                              "detected_at": stamp})
    with pytest.raises(validate.Invalid, match="at"):
        validate.instance_record("h", {"uuid": "u", "state": "enabled", "at": stamp})


def test_huge_nan_and_unhashable_values_are_refused_or_dropped():
    ev = validate.fault_event({"id": "e", "instance_uuid": "u", "host": "h", "kind": "k",
                               "detected_at": "2026-11-24T03:00:00Z",
                               "detected_mono": 10**400, "detail": ["x"]})
    assert ev["detected_mono"] is None and ev["detail"] == "['x']"
    for bad in ({"state": ["enabled"]}, {"state": "enabled", "health": {"a": 1}},
                {"state": "enabled", "interval_ms": 2**64}, {"state": "enabled", "at": 5}):
        with pytest.raises(validate.Invalid):
            validate.instance_record("h", {"uuid": "u", **bad})
    rec = validate.instance_record("h", {"uuid": "u", "state": "enabled",
                                         "vote_secs": float("nan"), "big": 2**64,
                                         "inf": float("inf"), "ok": 2**63 - 1, "list": [1]})
    assert rec["facts"] == {"ok": 2**63 - 1}


# --- the controller's bus endpoints ----------------------------------------------------------

class ControllerBusMachine(RuleBasedStateMachine):
    """A real controller (SQLite) driven through its bus methods with a mix of
    good and hostile reports. The model: which instances must be on record."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory(prefix="nfvha-val-")
        self.ctl = Controller(f"sqlite:///{self.dir.name}/v.sqlite", [],
                              agent_down_after_s=0)
        self.run(self.ctl.start())
        self.model: dict[str, tuple[str, str]] = {}  # uuid -> (host, state)
        self.refusals = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def invalid_total(self) -> float:
        return sum(s.value for m in self.ctl.metrics.invalid.collect() for s in m.samples
                   if s.name.endswith("_total"))

    @rule(host=st.sampled_from(["compute-1", "compute-2"]),
          good=st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3", "u4"]),
                                  st.sampled_from(sorted(validate.HEARTBEAT_STATES))),
                        max_size=4, unique_by=lambda t: t[0]),
          bad=st.lists(json_like(INSTANCE_KEYS) | instances, max_size=3))
    def hello(self, host, good, bad):
        # a bad item that happens to be valid counts as good in the model
        items, valid = [], []
        for u, s in good:
            items.append({"instance_uuid": u, "state": s})
            valid.append((u, s))
        for b in bad:
            try:
                r = validate.instance_record(host, b)
                valid.append((r["uuid"], r["state"]))
            except validate.Invalid:
                self.refusals += 1
            items.append(b)
        answer = self.run(self.ctl.hello(host, items))
        assert answer["instances"] == len(valid)
        assert len(answer["errors"]) == len(items) - len(valid)
        for u in [u for u, (h, _) in self.model.items() if h == host]:
            del self.model[u]
        for u, s in valid:
            self.model[u] = (host, s)

    @rule(host=hosts, rec=json_like(INSTANCE_KEYS) | instances)
    def instance_state(self, host, rec):
        kwargs = {k: v for k, v in rec.items() if isinstance(k, str) and k.isidentifier()
                  and k not in ("host", "self")} if isinstance(rec, dict) else {}
        kwargs.setdefault("instance_uuid", "u9")
        kwargs.setdefault("state", "enabled")
        try:
            expect = validate.instance_record(host, kwargs)
        except validate.Invalid:
            expect = None
        answer = self.run(self.ctl.instance_state(host, **kwargs))
        assert answer["ok"] is (expect is not None), answer
        if expect is None:
            self.refusals += 1
            assert answer["error"]
        elif answer["applied"]:
            self.model[expect["uuid"]] = (host, expect["state"])

    @rule(ev=json_like(FAULT_KEYS) | faults)
    def fault(self, ev):
        answer = self.run(self.ctl.fault(ev))
        if not answer["ok"]:
            self.refusals += 1
            assert answer["error"]

    @rule(host=hosts, count=json_like(max_leaves=2), digest=json_like(max_leaves=2))
    def sync(self, host, count, digest):
        answer = self.run(self.ctl.sync(host, count, digest))
        if not answer["ok"]:
            self.refusals += 1

    @rule(host=hosts, names=json_like(max_leaves=5), links=json_like(max_leaves=5),
          data=json_like(max_leaves=2), seq=json_like(max_leaves=2))
    def server_groups(self, host, names, links, data, seq):
        for answer in (self.run(self.ctl.sg_instances(host, names)),
                       self.run(self.ctl.sg_links(host, links)),
                       self.run(self.ctl.sg_broadcast(host, "instance-1", data)),
                       self.run(self.ctl.sg_status_query(host, "instance-1", seq))):
            self.refusals += 1 if not answer["ok"] else answer.get("refused", 0)

    @invariant()
    def store_matches_the_model(self):
        got = {i["uuid"]: (i["host"], i["heartbeat"]["state"])
               for i in self.run(self.ctl.list_instances())}
        assert got == self.model

    @invariant()
    def every_refusal_is_counted(self):
        assert self.invalid_total() == self.refusals

    def teardown(self):
        try:
            app = make_app(self.ctl)

            async def shown():  # everything stored can be shown (strict JSON)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as h:
                    for path in ("/v1/instances", "/v1/events", "/v1/server-groups"):
                        r = await h.get(path)
                        assert r.status_code == 200, (path, r.text)

            self.run(shown())
        finally:
            self.run(self.ctl.stop())
            self.loop.close()
            self.dir.cleanup()


ControllerBusMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_controller_bus_endpoints = ControllerBusMachine.TestCase
