"""[recovery] mode = nova against the Nova stand-in over real HTTP: the
guest's reboot is a HARD reboot, its stop an os-stop, each asked once per
fault; 409 (a task in progress) is asked again with backoff and succeeds,
or fails the action once the retries are spent; 404 (the server is gone) is
final: the action failed."""
from __future__ import annotations

import uuid

import pytest
from recovery_helpers import Rig, fault

from nfvha.controller.recovery.nova import NovaExecutor
from nfvha.controller.recovery.policy import Policy
from nfvha.controller.reporters._openstack import connect
from nfvha.standins.nova import NovaStandin
from tests.test_controller_helpers import db_urls

NO_WAIT = Policy(max_actions=3, window_s=3600, min_uptime_s=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    gen = db_urls(request, tmp_path)
    yield next(gen)
    gen.close()


@pytest.fixture
async def nova():
    async with NovaStandin() as n:
        yield n


def executor(url: str, retries: int = 3) -> NovaExecutor:
    return NovaExecutor(lambda: connect(auth_type="none", auth={"endpoint": url},
                                        compute_endpoint_override=url + "/v2.1"),
                        conflict_retries=retries, conflict_base_s=0.05)


@pytest.fixture
async def rig(db_url, nova):
    r = Rig(db_url, NO_WAIT, executor=executor(nova.url))
    await r.start()
    yield r
    await r.stop()


async def test_reboot_is_a_hard_reboot_and_stop_an_os_stop_once_per_fault(
        rig: Rig, nova: NovaStandin) -> None:
    vm = str(uuid.uuid4())
    reboot = fault(vm)
    stored = await rig.fault_and_wait(reboot)
    assert (await rig.c.fault(reboot)).get("duplicate") is True
    await rig.c.wait_idle(10)
    assert nova.actions == [(vm, "reboot", "HARD")]
    [got] = nova.received
    assert got.path == f"/v2.1/servers/{vm}/action" and got.body == {"reboot": {"type": "HARD"}}
    act = stored["action"]
    assert (act["mode"], act["action"], act["status"]) == ("nova", "nova_reboot", "issued")
    assert "Nova accepted the hard reboot" in act["reason"]

    await rig.back(vm)
    stop = await rig.fault_and_wait(fault(vm, action="stop"))
    assert stop["action"]["action"] == "nova_stop"
    assert stop["action"]["status"] == "succeeded"  # Nova took it: nothing comes back
    assert nova.actions[1:] == [(vm, "os-stop", None)]
    assert nova.received[1].body == {"os-stop": None}
    assert rig.compute.recovers() == []                 # the compute agent is not asked


async def test_a_task_in_progress_is_asked_again_then_succeeds(rig: Rig,
                                                                nova: NovaStandin) -> None:
    vm = str(uuid.uuid4())
    nova.conflict_next(2)
    stored = await rig.fault_and_wait(fault(vm))
    assert len(nova.attempts) == 3 and nova.actions == [(vm, "reboot", "HARD")]
    assert stored["action"]["status"] == "issued"
    assert "after 2 conflicts" in stored["action"]["reason"]


async def test_a_task_in_progress_for_too_long_fails_the_action(rig: Rig,
                                                                nova: NovaStandin) -> None:
    nova.conflict_next(10)
    stored = await rig.fault_and_wait(fault(str(uuid.uuid4())))
    assert len(nova.attempts) == 4 and nova.actions == []      # 1 + conflict_retries
    assert stored["action"]["status"] == "failed"
    assert "409" in stored["action"]["reason"]
    [d] = [d for d in stored["deliveries"] if d["sink"] == "recovery"]
    assert d["status"] == "rejected"


async def test_a_server_nova_does_not_know_fails_the_action_for_good(
        rig: Rig, nova: NovaStandin) -> None:
    nova.servers = {"someone-else"}
    stored = await rig.fault_and_wait(fault(str(uuid.uuid4())))
    assert len(nova.attempts) == 1
    act = stored["action"]
    assert act["status"] == "failed" and "instance gone" in act["reason"] and "404" in act[
        "reason"]
    assert rig.metric("nfvha_recovery_actions_total", mode="nova", action="nova_reboot",
                      status="failed") == 1


async def test_nova_unreachable_is_retried_with_the_record_kept(db_url, nova) -> None:
    nova.fail_next(2, 503)
    rig = Rig(db_url, NO_WAIT, executor=executor(nova.url))
    await rig.start()
    try:
        vm = str(uuid.uuid4())
        stored = await rig.fault_and_wait(fault(vm), timeout=30)
        [d] = [d for d in stored["deliveries"] if d["sink"] == "recovery"]
        assert d["status"] == "delivered" and d["attempts"] == 3 and "503" in d["last_error"]
        assert nova.actions == [(vm, "reboot", "HARD")]
        assert stored["action"]["status"] == "issued"
        # counted once, although asked three times
        assert len((await rig.c._db(rig.c.store.get_recovery, vm))["action_times"]) == 1
    finally:
        await rig.stop()
