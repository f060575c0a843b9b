"""A dead host's host_down events against the real Masakari (API and
engine, behind the real Keystone): the masakari sink turns the VMs' events
into ONE COMPUTE_HOST notification (event STOPPED, cluster_status OFFLINE)
for the host, which Masakari accepts for a registered host; every VM's
delivery is done and names it. With host_status UNKNOWN ([hosts]
masakari_host_status) Masakari's engine records it and evacuates nothing."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from nfvha.controller import Controller
from nfvha.controller.reporters.masakari import MasakariReporter
from nfvha.standins.nova import NovaStandin
from tests.test_real_masakari_notifications import Cloud, _host
from tests.test_real_masakari_notifications import cloud as cloud  # noqa: F401 - fixture

pytestmark = [pytest.mark.system, pytest.mark.slow]


def _host_down(host: str, at: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "instance_uuid": str(uuid.uuid4()), "host": host,
            "kind": "host_down", "corrective_action": "reboot",
            "detail": "compute host down: agent silent; probe: no answer",
            "detected_at": at}


async def _deliver_all(cloud: Cloud, tmp_path: Any, host_status: str,
                       events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    c = Controller(f"sqlite:///{tmp_path}/m-{uuid.uuid4().hex[:6]}.sqlite",
                   [MasakariReporter(cloud.nfvha, host_status=host_status)],
                   retry_base_s=0.05, retry_max_s=0.2)
    await c.start()
    try:
        await asyncio.gather(*(c.emit(ev) for ev in events))   # as the monitor does
        await c.wait_idle(60)
        return [(await c.get_event(ev["id"]))["deliveries"][0] for ev in events]
    finally:
        await c.stop()


@pytest.mark.parametrize("host_status", ["NORMAL", "UNKNOWN"])
async def test_one_compute_host_notification_for_all_vms_of_a_dead_host(
        cloud: Cloud, tmp_path: Any, host_status: str) -> None:
    host = _host()
    nova = NovaStandin(compute_hosts={host})
    await nova.start(port=cloud.ks.nova_port)
    try:
        await cloud.register(host)
        at = "2026-12-02T10:00:00.000000+00:00"
        deliveries = await _deliver_all(cloud, tmp_path, host_status,
                                        [_host_down(host, at) for _ in range(5)])
        assert {d["status"] for d in deliveries} == {"delivered"}, deliveries
        notes = {d["note"] for d in deliveries}
        assert len(notes) == 1, notes                       # one answer, shared
        [note] = notes
        assert note.startswith("COMPUTE_HOST notification_uuid "), note
        listed = await cloud.admin(lambda c: [n for n in c.instance_ha.notifications()
                                              if n.source_host_uuid and n.type ==
                                              "COMPUTE_HOST"])
        mine = [n for n in listed if n.notification_uuid == note.split()[-1]]
        [n] = mine
        assert n.payload == {"event": "STOPPED", "host_status": host_status,
                             "cluster_status": "OFFLINE"}
        if host_status == "UNKNOWN":
            done = await cloud.wait_status(n.notification_uuid,
                                           {"ignored", "finished", "error", "failed"})
            assert done.status == "ignored", done
            assert nova.actions == []
    finally:
        await nova.stop()
