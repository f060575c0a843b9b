"""The store's recovery records: one decision per fault in one transaction
with the instance's row locked, so controllers deciding at the same moment
on one database never act more than max_actions times; action records move
forward only; the guest's heartbeat back closes the first open action."""
from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from nfvha.controller import validate
from nfvha.controller.recovery.policy import Policy
from nfvha.controller.store import Store
from tests.test_controller_helpers import db_urls, fault

T0 = 1_800_000_000.0  # a fixed epoch second: the policy's clock is an argument


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request, tmp_path):
    gen = db_urls(request, tmp_path)
    yield next(gen)
    gen.close()


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    yield s
    s.close()


def stored_fault(s: Store, vm: str, **over) -> dict:
    ev = validate.fault_event(fault(instance_uuid=vm, **over))
    s.record_fault(ev, ["recovery"])
    return ev


def test_decisions_count_pause_exhaust_and_rearm(store: Store) -> None:
    vm, pol = str(uuid.uuid4()), Policy(max_actions=2, window_s=100, min_uptime_s=10)
    verdicts = []
    for i, dt in enumerate((0, 20, 40, 60)):
        ev = stored_fault(store, vm)
        d, rec = store.decide_action(ev, "libvirt", "reset", pol, T0 + dt)
        verdicts.append((d.verdict, rec["status"]))
        if i == 0:
            assert rec["issued_at"] is not None and rec["action"] == "reset"
    assert verdicts == [("act", "issuing"), ("act", "issuing"), ("exhaust", "skipped"),
                        ("exhausted", "skipped")]
    row = store.get_recovery(vm)
    assert row["exhausted"] and row["exhausted_at"] and len(row["action_times"]) == 2
    store.set_recovery_paused(vm, True, "maintenance by ops")
    ev = stored_fault(store, vm)
    d, rec = store.decide_action(ev, "libvirt", "reset", pol, T0 + 80)
    assert d.verdict == "paused" and "maintenance by ops" in rec["reason"]
    row = store.rearm_recovery(vm)
    assert not row["exhausted"] and row["action_times"] == [] and row["paused"]
    store.set_recovery_paused(vm, False)
    ev = stored_fault(store, vm)
    d, rec = store.decide_action(ev, "libvirt", "reset", pol, T0 + 81)
    assert (d.verdict, rec["status"]) == ("act", "issuing")


def test_a_decided_fault_is_not_decided_again_but_a_waiting_one_is(store: Store) -> None:
    vm, pol = str(uuid.uuid4()), Policy(max_actions=5, window_s=100, min_uptime_s=10)
    first = stored_fault(store, vm)
    d, _ = store.decide_action(first, "nova", "nova_reboot", pol, T0)
    assert d.verdict == "act"
    again, rec = store.decide_action(first, "nova", "nova_reboot", pol, T0 + 50)
    assert again is None and rec["status"] == "issuing"      # resumed: same record
    assert len(store.get_recovery(vm)["action_times"]) == 1  # counted once
    second = stored_fault(store, vm)
    d, rec = store.decide_action(second, "nova", "nova_reboot", pol, T0 + 3)
    assert d.verdict == "wait" and d.at == T0 + 10 and rec["status"] == "waiting"
    d, rec = store.decide_action(second, "nova", "nova_reboot", pol, T0 + 10)
    assert d.verdict == "act" and rec["status"] == "issuing"
    # a skip leaves a decided record alone
    changed, rec = store.skip_action(second, "nova", "nova_reboot", "too late")
    assert not changed and rec["status"] == "issuing"


def test_actions_move_forward_only_and_the_heartbeat_back_closes_the_first(
        store: Store) -> None:
    vm, pol = str(uuid.uuid4()), Policy(max_actions=5, window_s=1000, min_uptime_s=0)
    detected = datetime(2027, 1, 15, 8, 0, 0, tzinfo=timezone.utc)
    now = detected.timestamp() + 1
    ev = stored_fault(store, vm, detected_at=detected.isoformat())
    store.decide_action(ev, "libvirt", "reset", pol, now)
    # heartbeat from before the action: not its recovery
    assert store.mark_recovered(vm, detected) is None
    assert store.instances_with_open_actions([vm, str(uuid.uuid4())]) == {vm}
    assert store.mark_action_issued(ev["id"], detail="domain reset")["status"] == "issued"
    assert store.mark_action_issued(ev["id"]) is None          # only from issuing
    back = detected + timedelta(seconds=7, milliseconds=250)
    rec = store.mark_recovered(vm, back)
    assert rec["status"] == "succeeded" and rec["recovery_ms"] == 7250
    assert rec["recovered_at"] == back.isoformat(timespec="microseconds")
    assert store.mark_recovered(vm, back) is None               # nothing open any more
    assert store.instances_with_open_actions([vm]) == set()
    assert store.mark_action_failed(ev["id"], "late") is None   # succeeded stays
    assert store.get_event(ev["id"])["action"]["status"] == "succeeded"


def test_issued_actions_whose_guest_never_came_back_fail(store: Store) -> None:
    vm, pol = str(uuid.uuid4()), Policy(max_actions=5, window_s=1000, min_uptime_s=0)
    now = datetime.now(timezone.utc).timestamp()
    ev = stored_fault(store, vm)
    store.decide_action(ev, "libvirt", "destroy", pol, now - 700)
    store.mark_action_issued(ev["id"])
    never_confirmed = stored_fault(store, vm)          # the host never answered
    store.decide_action(never_confirmed, "libvirt", "destroy", pol, now - 650)
    fresh = stored_fault(store, vm)
    store.decide_action(fresh, "libvirt", "destroy", pol, now)
    store.mark_action_issued(fresh["id"])
    failed = store.fail_unrecovered(datetime.now(timezone.utc) - timedelta(seconds=600),
                                    "no heartbeat within 600 s")
    assert sorted(a["event_id"] for a in failed) == sorted([ev["id"], never_confirmed["id"]])
    assert store.get_action(ev["id"])["status"] == "failed"
    assert store.get_action(never_confirmed["id"])["reason"] == "no heartbeat within 600 s"
    assert store.get_action(fresh["id"])["status"] == "issued"
    assert store.fail_unrecovered(datetime.now(timezone.utc) - timedelta(seconds=600),
                                  "again") == []


@pytest.mark.parametrize("db_url", ["postgresql", "mariadb"], indirect=True)
def test_controllers_deciding_at_once_act_at_most_max_actions_times(db_url: str) -> None:
    """Eight stores (as eight controllers) decide on eight faults of one
    instance at the same moment: the row lock makes exactly max_actions act."""
    vm, pol = str(uuid.uuid4()), Policy(max_actions=3, window_s=3600, min_uptime_s=0)
    stores = [Store(db_url) for _ in range(8)]
    try:
        evs = [stored_fault(stores[0], vm) for _ in stores]
        start = threading.Barrier(len(stores))
        verdicts: list[str] = []
        errors: list[BaseException] = []

        def run(s: Store, ev: dict) -> None:
            try:
                start.wait()
                d, _ = s.decide_action(ev, "nova", "nova_stop", pol, T0)
                verdicts.append(d.verdict)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s, ev)) for s, ev in zip(stores, evs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(verdicts) == ["act"] * 3 + ["exhaust"] + ["exhausted"] * 4
        assert len(stores[0].get_recovery(vm)["action_times"]) == 3
    finally:
        for s in stores:
            s.close()
