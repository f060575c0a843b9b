"""Recovery carried out on real VMs under a real libvirtd, end to end.

The controller and the compute agent as `nfvha all-in-one` wires them
([compute] instances_source = libvirt, [recovery] mode = libvirt), guests
booted from the project's guest image as persistent TCG domains. For each
fault: the kind reported, the action carried out as libvirt shows it (the
guest's boot id changed after a reset; the domain shut off after a
destroy), the guest heartbeating again after a reset; and no alarm and no
action for a clean shutdown or a reboot from inside the guest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import RecordingSink

pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.fixture
async def rig(libvirtd, guest_image, tmp_path: Path):
    from nfvha.cli.services import load_conf
    from nfvha.demo.qemu_libvirt import RecoveryRig

    rec = RecordingSink()
    r = RecoveryRig(load_conf([]), libvirtd.uri, tmp_path, reporters=[rec])
    r.recorder = rec  # type: ignore[attr-defined]
    await r.start(guest_image)
    yield r
    await r.stop()


async def _registered(rig: Any, g: Any) -> None:
    assert await rig.wait_enabled(g.uuid, 0.0, 180) is not None, \
        f"{g.name} did not register:\n{g.console()}"


async def test_each_fault_gets_the_guests_corrective_action_and_it_heartbeats_again(
        rig: Any) -> None:
    from nfvha.demo.qemu_libvirt import SCENARIOS, inject, repair

    g = await rig.fleet.add("rb", interval_ms=250, corrective_action="reboot")
    await _registered(rig, g)
    results = {}
    for label in SCENARIOS:
        res = await inject(rig, g, label, corrective_action="reboot")
        results[label] = res
        assert res["verdict"] == "ok", (label, res, g.console())
        assert await repair(rig, g, label), f"{g.name} not back after {label}"

    for label in ("hang", "unhealthy", "panic", "qemu_killed"):
        res = results[label]
        assert res["detected_at"] is not None and res["action"] == "reset", res
        assert res["action_status"] == "succeeded" and res["recovery_ms"] > 0, res
        if label in ("hang", "unhealthy"):  # the VM was running: a new boot id
            assert len(set(res["boot_ids"])) == 2, res
    assert results["hang"]["fault"] == "heartbeat_loss"
    assert results["panic"]["fault"] == results["qemu_killed"]["fault"] == "vm_crashed"
    # from inside: no alarm, no action; the reboot's guest is back, the shut down one off
    assert results["guest_reboot"]["recovered_at"] is not None
    assert len(set(results["guest_reboot"]["boot_ids"])) == 2
    assert results["guest_shutdown"]["domain"] == "shut off"
    events = await rig.stack.controller.list_events()
    mine = [e for e in events if e["instance_uuid"] == g.uuid]
    assert sorted(e["kind"] for e in mine) == sorted(
        ["heartbeat_loss", "unhealthy", "vm_crashed", "vm_crashed"]), mine
    # one action per fault, each reported to the sink once
    assert all(e["action"] and e["action"]["action"] == "reset" for e in mine)
    told = [e["id"] for e in rig.recorder.events if e["instance_uuid"] == g.uuid]
    assert sorted(told) == sorted(e["id"] for e in mine)


async def test_a_guest_that_asked_for_stop_is_destroyed_and_stays_off(rig: Any) -> None:
    from nfvha.demo.qemu_libvirt import inject

    g = await rig.fleet.add("st", interval_ms=250, corrective_action="stop")
    await _registered(rig, g)
    res = await inject(rig, g, "hang", corrective_action="stop")
    assert res["verdict"] == "ok", (res, g.console())
    assert res["action"] == "destroy" and res["domain"] == "shut off"
    events = [e for e in await rig.stack.controller.list_events()
              if e["instance_uuid"] == g.uuid]
    # the destroy's channel loss is no second fault
    assert [e["kind"] for e in events] == ["heartbeat_loss"]


async def test_a_vm_paused_by_its_owner_is_no_fault_and_heartbeats_again_when_resumed(
        rig: Any) -> None:
    import asyncio
    import time

    g = await rig.fleet.add("pz", interval_ms=250, corrective_action="reboot")
    await _registered(rig, g)
    t0 = time.monotonic()
    await asyncio.to_thread(lambda: g.domain().suspend())   # virsh suspend
    await asyncio.sleep(3.0)                                # 12 intervals of silence
    assert rig.faults_since(g.uuid, t0) == []
    assert rig.seen.states[g.uuid][0] == "disabled"
    await asyncio.to_thread(lambda: g.domain().resume())
    assert await rig.wait_enabled(g.uuid, t0, 60) is not None, g.console()
    assert rig.faults_since(g.uuid, t0) == []
    events = [e for e in await rig.stack.controller.list_events()
              if e["instance_uuid"] == g.uuid]
    assert events == []  # nothing stored, nothing acted on
