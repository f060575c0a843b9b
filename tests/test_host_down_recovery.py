"""A host_down fault goes through the recovery that exists: with [recovery]
mode = nova a VM whose guest asked for a reboot is evacuated (Nova rebuilds
it on another host), once per fault, with the same loop protection, and
asked again while Nova still finds the host's nova-compute up; a guest that
asked to be stopped stays off; mode libvirt has nothing to act with (the
host's agent is gone) and says so."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from openstack import exceptions as sdk_exc
from recovery_helpers import HOST, Rig, fault, now_iso

from nfvha.controller.recovery.nova import NovaExecutor
from nfvha.controller.recovery.policy import Policy

NO_WAIT = Policy(max_actions=3, window_s=3600, min_uptime_s=0)


def http_error(status: int, message: str) -> sdk_exc.HttpException:
    """What openstacksdk raises for an HTTP answer of ``status``."""
    import requests

    r = requests.Response()
    r.status_code, r._content = status, b""
    return sdk_exc.HttpException(message=message, response=r)


class _Compute:
    def __init__(self, not_yet_down: int) -> None:
        self.evacuated: list[str] = []
        self.refusals = not_yet_down

    def evacuate_server(self, server: str) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise http_error(400, f"Compute service of {HOST} is still in use.")
        self.evacuated.append(server)


class _Conn:
    def __init__(self, compute: _Compute) -> None:
        self.compute = compute


def _executor(compute: _Compute, wait_s: float = 5.0) -> NovaExecutor:
    return NovaExecutor(lambda: _Conn(compute),  # type: ignore[arg-type,return-value]
                        conflict_base_s=0.05, service_down_wait_s=wait_s,
                        service_down_step_s=0.05)


async def test_a_vm_of_a_dead_host_is_evacuated_once_and_recovered_elsewhere(
        tmp_path: Path) -> None:
    compute = _Compute(not_yet_down=2)
    rig = await Rig(f"sqlite:///{tmp_path / 'r.db'}", NO_WAIT,
                    executor=_executor(compute)).start()
    try:
        vm = str(uuid.uuid4())
        ev = fault(vm, kind="host_down")
        stored = await rig.fault_and_wait(ev)
        act: dict[str, Any] = stored["action"]
        assert (act["mode"], act["action"], act["status"]) == ("nova", "nova_evacuate",
                                                               "issued")
        assert compute.evacuated == [vm]                  # after Nova saw the host down
        assert rig.compute.recovers() == []               # the dead host's agent not asked
        assert (await rig.c.fault(ev)).get("duplicate") is True
        await rig.c.wait_idle(10)
        assert compute.evacuated == [vm]
        # its guest heartbeats again, from the host it was rebuilt on
        await rig.c.instance_state("cmp-2", vm, "enabled", "healthy", 1000, "reboot",
                                   at=now_iso())
        got = await rig.c.get_event(ev["id"])
        assert got["action"]["status"] == "succeeded"
    finally:
        await rig.stop()


async def test_a_stopped_guest_stays_off_and_libvirt_mode_cannot_act(tmp_path: Path) -> None:
    compute = _Compute(not_yet_down=0)
    rig = await Rig(f"sqlite:///{tmp_path / 'r.db'}", NO_WAIT,
                    executor=_executor(compute)).start()
    try:
        stored = await rig.fault_and_wait(fault(str(uuid.uuid4()), kind="host_down",
                                                action="stop"))
        assert stored["action"]["status"] == "skipped"
        assert "no action for host_down in mode nova" in stored["action"]["reason"]
        assert compute.evacuated == []
    finally:
        await rig.stop()

    rig = await Rig(f"sqlite:///{tmp_path / 'l.db'}", NO_WAIT).start()   # libvirt
    try:
        stored = await rig.fault_and_wait(fault(str(uuid.uuid4()), kind="host_down"))
        assert stored["action"]["status"] == "skipped"
        assert "no action for host_down in mode libvirt" in stored["action"]["reason"]
        assert rig.compute.recovers() == []
    finally:
        await rig.stop()


async def test_evacuation_is_asked_again_later_while_nova_finds_the_host_up(
        tmp_path: Path) -> None:
    compute = _Compute(not_yet_down=10_000)
    rig = await Rig(f"sqlite:///{tmp_path / 'r.db'}", NO_WAIT,
                    executor=_executor(compute, wait_s=0.2)).start()
    try:
        vm = str(uuid.uuid4())
        ev = fault(vm, kind="host_down")
        await rig.c.fault(ev)
        import asyncio
        await asyncio.sleep(1.5)
        got = await rig.c.get_event(ev["id"])
        [d] = [d for d in got["deliveries"] if d["sink"] == "recovery"]
        assert d["status"] == "pending" and d["attempts"] >= 2      # retried, not failed
        assert "does not see the host down yet" in d["last_error"]
        compute.refusals = 0                                         # Nova caught up
        await asyncio.wait_for(rig.c.wait_idle(), 20)
        assert compute.evacuated == [vm]
    finally:
        await rig.stop()
