"""[recovery] mode = libvirt end to end on the in-process bus, with a
compute endpoint that records what it is asked: once per fault, loop
protection across a controller restart, re-arm, pause, a silent host, a
planned Nova operation, the notice before acting on an unhealthy guest, the
heartbeat back closing the action, the min_uptime wait, and bad
recovery_result input refused without an exception. Real SQLite and
PostgreSQL stores."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from recovery_helpers import HOST, Rig, fault, now_iso, record

from nfvha.controller import validate
from nfvha.controller.recovery.policy import Policy
from nfvha.controller.recovery.sink import exhausted_event_id
from nfvha.controller.store import Store
from tests.test_controller_helpers import db_urls

NO_WAIT = Policy(max_actions=3, window_s=3600, min_uptime_s=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    gen = db_urls(request, tmp_path)
    yield next(gen)
    gen.close()


@pytest.fixture
async def rig(db_url):
    r = Rig(db_url, NO_WAIT)
    await r.start()
    yield r
    await r.stop()


def delivery(ev: dict, sink: str) -> dict:
    [d] = [d for d in ev["deliveries"] if d["sink"] == sink]
    return d


async def test_a_fault_is_acted_on_once_and_the_heartbeat_back_closes_it(rig: Rig) -> None:
    vm = str(uuid.uuid4())
    ev = fault(vm, detected_ago_s=3.0)
    stored = await rig.fault_and_wait(ev)
    again = await rig.c.fault(ev)                      # the compute's retry of the same fault
    assert again.get("duplicate") is True
    await rig.c.wait_idle(10)
    [asked] = rig.compute.recovers()
    assert asked == {"action_id": ev["id"], "reply_to": "ctl-1", "instance_uuid": vm,
                     "action": "reset"}
    act = stored["action"]
    assert (act["mode"], act["action"], act["status"]) == ("libvirt", "reset", "issued")
    assert act["issued_at"] and act["done_at"] and "domain reset" in act["reason"]
    d = delivery(stored, "recovery")
    assert d["status"] == "delivered" and d["note"].startswith("reset issued")
    assert rig.metric("nfvha_recovery_actions_total", mode="libvirt", action="reset",
                      status="issued") == 1
    await rig.back(vm)
    act = (await rig.c.get_event(ev["id"]))["action"]
    assert act["status"] == "succeeded" and act["recovered_at"]
    assert 3000 <= act["recovery_ms"] < 60_000          # detected 3 s before the heartbeat
    assert rig.metric("nfvha_recovery_seconds_count") == 1
    assert rig.metric("nfvha_recovery_actions_total", mode="libvirt", action="reset",
                      status="succeeded") == 1
    await rig.back(vm)                                  # a later heartbeat changes nothing
    assert rig.metric("nfvha_recovery_seconds_count") == 1


async def test_stop_destroys_and_none_or_log_need_no_action(rig: Rig) -> None:
    vm = str(uuid.uuid4())
    stop = await rig.fault_and_wait(fault(vm, action="stop"))
    assert stop["action"]["action"] == "destroy"
    # the guest asked to stay off: done is success, with no heartbeat to wait for
    assert stop["action"]["status"] == "succeeded" and stop["action"]["recovery_ms"] is None
    for action in ("none", "log"):
        ev = await rig.fault_and_wait(fault(vm, action=action))
        assert ev["action"]["status"] == "skipped" and ev["action"]["action"] is None
        assert f"corrective_action {action}" in ev["action"]["reason"]
    assert [r["action"] for r in rig.compute.recovers()] == ["destroy"]


async def test_a_lost_answer_is_asked_again_with_the_same_id(rig: Rig) -> None:
    vm = str(uuid.uuid4())
    rig.compute.drop = 1                                # the first answer never comes
    ev = fault(vm)
    stored = await rig.fault_and_wait(ev, timeout=30)
    ids = [r["action_id"] for r in rig.compute.recovers()]
    assert ids == [ev["id"], ev["id"]]
    d = delivery(stored, "recovery")
    assert d["status"] == "delivered" and d["attempts"] == 2
    assert "no recovery_result" in d["last_error"]
    assert stored["action"]["status"] == "issued"
    assert len((await rig.c._db(rig.c.store.get_recovery, vm))["action_times"]) == 1


async def test_a_guest_failing_after_each_recovery_gets_max_actions_then_one_exhausted_event(
        rig: Rig) -> None:
    vm = str(uuid.uuid4())
    faults = [fault(vm) for _ in range(5)]
    for i, ev in enumerate(faults[:3]):
        stored = await rig.fault_and_wait(ev)
        assert stored["action"]["status"] == "issued"
        await rig.back(vm)
        if i == 1:
            await rig.restart()                         # the counts live in the store
    exhaust = await rig.fault_and_wait(faults[3])
    assert exhaust["action"]["status"] == "skipped"
    assert "3 actions within 3600 s" in exhaust["action"]["reason"]
    last = await rig.fault_and_wait(faults[4])
    assert last["action"]["status"] == "skipped" and "re-arm" in last["action"]["reason"]
    assert len(rig.compute.recovers()) == 3
    events = await rig.c.list_events()
    exhausted = [e for e in events if e["kind"] == "recovery_exhausted"]
    assert len(exhausted) == 1
    [ex] = exhausted
    assert ex["id"] == exhausted_event_id(faults[3]["id"])
    assert ex["corrective_action"] == "reboot" and "3 actions within 3600 s" in ex["detail"]
    assert [d["sink"] for d in ex["deliveries"]] == ["log"]   # every sink but recovery
    assert ex["deliveries"][0]["status"] == "delivered"
    assert rig.metric("nfvha_recovery_exhausted_total") == 1
    assert (await rig.c._db(rig.c.store.get_recovery, vm))["exhausted"]

    await rig.c._db(rig.c.store.rearm_recovery, vm)     # an operator re-arms
    stored = await rig.fault_and_wait(fault(vm))
    assert stored["action"]["status"] == "issued" and len(rig.compute.recovers()) == 4


async def test_paused_recovery_and_a_silent_host_skip_the_action(db_url) -> None:
    rig = Rig(db_url, NO_WAIT, agent_down_after_s=0.3)
    await rig.start()
    try:
        vm = str(uuid.uuid4())
        await rig.c._db(rig.c.store.set_recovery_paused, vm, True, "change CHG-42")
        await rig.c.alive(HOST)
        paused = await rig.fault_and_wait(fault(vm))
        assert paused["action"]["status"] == "skipped"
        assert "paused" in paused["action"]["reason"]
        assert "CHG-42" in paused["action"]["reason"]
        assert "skipped" in delivery(paused, "recovery")["note"]
        await rig.c._db(rig.c.store.set_recovery_paused, vm, False, "")
        while rig.c.hosts.state(HOST) != "silent":
            await asyncio.sleep(0.05)
        silent = await rig.fault_and_wait(fault(vm))
        assert silent["action"]["status"] == "skipped"
        assert "silent" in silent["action"]["reason"]
        assert rig.compute.recovers() == []
        assert (await rig.c._db(rig.c.store.get_recovery, vm))["action_times"] == []
    finally:
        await rig.stop()


async def test_a_planned_nova_operation_suppresses_the_recovery(rig: Rig) -> None:
    vm = str(uuid.uuid4())
    await rig.c.on_nova_operation({
        "event_type": "instance.reboot.start", "priority": "INFO",
        "publisher_id": f"nova-compute:{HOST}", "timestamp": "2026-11-24 09:00:00.000000",
        "payload": {"nova_object.name": "InstanceActionPayload", "nova_object.data": {
            "uuid": vm, "host": HOST, "state": "active", "task_state": "rebooting",
            "power_state": "running"}}})
    stored = await rig.fault_and_wait(fault(vm))
    d = delivery(stored, "recovery")
    assert d["status"] == "suppressed" and "reboot" in d["note"]
    assert stored["action"] is None and rig.compute.recovers() == []


async def test_an_unhealthy_guest_gets_its_irrevocable_notice_before_the_action(
        rig: Rig) -> None:
    vm = str(uuid.uuid4())
    await rig.c.hello(HOST, [record(vm, health="unhealthy")])
    stored = await rig.fault_and_wait(fault(vm, kind="unhealthy", action="stop"))
    assert [(m, kw.get("event_type"), kw.get("notification_type"), kw.get("action"))
            for m, kw in rig.compute.calls] == [
        ("instance_action", "stop", "irrevocable", None), ("recover", None, None, "destroy")]
    assert rig.compute.calls[0][1]["timeout_ms"] == 2000        # notice_timeout_s
    assert "notice stop: complete" in stored["action"]["reason"]


async def test_too_soon_after_the_last_action_waits_then_acts_or_finds_it_back(
        db_url) -> None:
    rig = Rig(db_url, Policy(max_actions=5, window_s=3600, min_uptime_s=1.5))
    await rig.start()
    try:
        vm = str(uuid.uuid4())
        await rig.fault_and_wait(fault(vm))
        await rig.back(vm)
        second = fault(vm)
        await rig.c.fault(second)
        waiting = await _until_action(rig, second["id"], "waiting")
        assert "min_uptime_s" in waiting["reason"] and len(rig.compute.recovers()) == 1
        stored = await rig.fault_and_wait(second)          # ~1.5 s later
        assert stored["action"]["status"] == "issued" and len(rig.compute.recovers()) == 2

        third = fault(vm)                                  # fails again at once ...
        await rig.c.fault(third)
        await _until_action(rig, third["id"], "waiting")
        await rig.back(vm)                                 # ... and comes back by itself
        stored = await rig.fault_and_wait(third)
        assert stored["action"]["status"] == "skipped"
        assert "recovered by itself" in stored["action"]["reason"]
        assert len(rig.compute.recovers()) == 2
    finally:
        await rig.stop()


async def _until_action(rig: Rig, event_id: str, status: str) -> dict:
    for _ in range(300):
        ev = await rig.c.get_event(event_id)
        if ev and ev["action"] and ev["action"]["status"] == status:
            return ev["action"]
        await asyncio.sleep(0.02)
    raise AssertionError(f"action of {event_id} never {status}: {ev and ev['action']}")


async def test_a_resumed_delivery_does_not_act_again_or_re_asks_an_unanswered_one(
        db_url) -> None:
    """A controller died after deciding: `issued` is not asked again,
    `issuing` is, with the same id."""
    vm_done, vm_asking = str(uuid.uuid4()), str(uuid.uuid4())
    s = Store(db_url)
    try:
        done = validate.fault_event(fault(vm_done))
        asking = validate.fault_event(fault(vm_asking))
        for ev in (done, asking):
            s.record_fault(ev, ["log", "recovery"], owner="ctl-dead")
            s.decide_action(ev, "libvirt", "reset", NO_WAIT, 1_800_000_000.0)
        s.mark_action_issued(done["id"])
    finally:
        s.close()
    rig = Rig(db_url, NO_WAIT)
    await rig.start()
    try:
        await asyncio.wait_for(rig.c.wait_idle(), 20)
        assert [r["action_id"] for r in rig.compute.recovers()] == [asking["id"]]
        d = delivery(await rig.c.get_event(done["id"]), "recovery")
        assert d["status"] == "delivered" and d["note"] == "reset issued already"
        assert (await rig.c.get_event(asking["id"]))["action"]["status"] == "issued"
    finally:
        await rig.stop()


async def test_an_action_whose_guest_never_comes_back_fails(db_url) -> None:
    rig = Rig(db_url, NO_WAIT, recovered_timeout_s=0.5)
    await rig.start()
    try:
        vm = str(uuid.uuid4())
        ev = fault(vm)
        await rig.fault_and_wait(ev)
        act = await _until_action(rig, ev["id"], "failed")
        assert "no heartbeat within 0.5 s" in act["reason"]
        assert rig.metric("nfvha_recovery_actions_total", mode="libvirt", action="reset",
                          status="failed") == 1
    finally:
        await rig.stop()


async def test_a_compute_that_refuses_fails_the_action(rig: Rig) -> None:
    rig.compute.ok, rig.compute.detail = False, "no libvirt on this host"
    stored = await rig.fault_and_wait(fault(str(uuid.uuid4())))
    assert stored["action"]["status"] == "failed"
    assert stored["action"]["reason"] == "no libvirt on this host"
    d = delivery(stored, "recovery")
    assert d["status"] == "rejected" and "no libvirt" in d["last_error"]


@pytest.mark.parametrize("kwargs", [
    {},
    {"action_id": 5, "ok": True, "host": HOST, "instance_uuid": "u"},
    {"action_id": "a", "ok": "yes", "host": HOST, "instance_uuid": "u"},
    {"action_id": "a", "ok": True, "detail": ["x"], "host": HOST, "instance_uuid": "u"},
    {"action_id": "a", "ok": True, "host": None, "instance_uuid": "u"},
    {"action_id": "a", "ok": True, "host": HOST, "instance_uuid": "u", "done_at": "noon"},
    {"action_id": "x" * 65, "ok": True, "host": HOST, "instance_uuid": "u"},
    {"action_id": str(uuid.uuid4()), "ok": True, "host": HOST, "instance_uuid": "u",
     "done_at": now_iso()},                                   # well formed, unknown id
])
async def test_bad_recovery_results_are_refused_never_raised(rig: Rig, kwargs) -> None:
    before = rig.metric("nfvha_reports_invalid_total", method="recovery_result")
    answer = await rig.c.recovery_result(**kwargs)
    assert answer["ok"] is False and answer["error"]
    assert rig.metric("nfvha_reports_invalid_total", method="recovery_result") == before + 1
    await rig.bus.cast_controller("recovery_result", **kwargs)  # over the bus: no harm
    await asyncio.sleep(0.05)
    assert rig.metric("nfvha_reports_invalid_total", method="recovery_result") == before + 2


async def test_a_late_answer_still_reaches_the_record(rig: Rig) -> None:
    """No one waits any more (the asking controller died): the answer is
    still written to the action record."""
    vm = str(uuid.uuid4())
    ev = validate.fault_event(fault(vm))
    await rig.c._db(rig.c.store.record_fault, ev, ["log"])
    await rig.c._db(rig.c.store.decide_action, ev, "libvirt", "reset", NO_WAIT, 1.8e9)
    answer = await rig.c.recovery_result(action_id=ev["id"], ok=True, detail="domain reset",
                                         host=HOST, instance_uuid=vm, done_at=now_iso())
    assert answer == {"ok": True}
    assert (await rig.c.get_event(ev["id"]))["action"]["status"] == "issued"
    wrong = await rig.c.recovery_result(action_id=ev["id"], ok=True, host=HOST,
                                        instance_uuid=str(uuid.uuid4()))
    assert wrong["ok"] is False


async def test_a_host_that_never_answers_ends_in_a_failed_action(db_url) -> None:
    rig = Rig(db_url, NO_WAIT, recovered_timeout_s=1.5)
    await rig.start()
    try:
        rig.compute.drop = 1000                          # takes the casts, never answers
        ev = fault(str(uuid.uuid4()))
        stored = await rig.fault_and_wait(ev, timeout=30)
        assert stored["action"]["status"] == "failed"
        assert "no heartbeat within 1.5 s" in stored["action"]["reason"]
        d = delivery(stored, "recovery")
        assert d["status"] == "rejected" and d["attempts"] >= 2
        assert {r["action_id"] for r in rig.compute.recovers()} == {ev["id"]}
    finally:
        await rig.stop()


async def test_a_resync_hello_also_tells_the_guest_is_back(rig: Rig) -> None:
    vm, other = str(uuid.uuid4()), str(uuid.uuid4())
    ev = fault(vm, detected_ago_s=1.0)
    await rig.fault_and_wait(ev)
    await rig.c.hello(HOST, [record(other), record(vm, health="unhealthy")])
    assert (await rig.c.get_event(ev["id"]))["action"]["status"] == "issued"  # not healthy
    await rig.c.hello(HOST, [record(other), record(vm)])
    act = (await rig.c.get_event(ev["id"]))["action"]
    assert act["status"] == "succeeded" and act["recovery_ms"] >= 1000
