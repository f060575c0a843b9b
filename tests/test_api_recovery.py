"""REST of recovery: GET /v1/events gives each event's action (or null),
GET/POST /v1/instances/{uuid}/recovery shows and pauses an instance's loop
protection, POST .../recovery/rearm re-arms it; the POSTs need a Keystone
token with an admin role when [api] auth_strategy = keystone; /metrics
has every recovery series from the start."""
from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from recovery_helpers import Rig, fault
from test_real_keystone_token_checks import Users

from nfvha.controller.api import make_app
from nfvha.controller.apiauth import protect
from nfvha.controller.recovery.policy import Policy


@pytest.fixture
async def rig(tmp_path):
    r = Rig(f"sqlite:///{tmp_path}/c.sqlite", Policy(max_actions=1, window_s=3600,
                                                     min_uptime_s=0))
    await r.start()
    yield r
    await r.stop()


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nfvha")


async def test_events_carry_their_action_and_recovery_can_be_paused_and_rearmed(
        rig: Rig) -> None:
    vm = str(uuid.uuid4())
    await rig.fault_and_wait(fault(vm))
    await rig.fault_and_wait(fault(vm))                     # max_actions 1: exhausts
    async with _client(make_app(rig.c)) as http:
        events = (await http.get("/v1/events")).json()
        kinds = [(e["kind"], e["action"] and e["action"]["status"]) for e in events]
        assert kinds == [("heartbeat_loss", "issued"), ("heartbeat_loss", "skipped"),
                         ("recovery_exhausted", None)]
        act = events[0]["action"]
        assert set(act) == {"event_id", "instance_uuid", "mode", "action", "status", "reason",
                            "issued_at", "done_at", "recovered_at", "recovery_ms"}
        assert (act["mode"], act["action"]) == ("libvirt", "reset")
        one = (await http.get(f"/v1/events/{events[0]['id']}")).json()
        assert one["action"] == act

        r = (await http.get(f"/v1/instances/{vm}/recovery")).json()
        assert r["exhausted"] and r["exhausted_at"] and len(r["action_times"]) == 1
        assert r["mode"] == "libvirt" and not r["paused"]
        r = await http.post(f"/v1/instances/{vm}/recovery/rearm")
        assert r.status_code == 200 and not r.json()["exhausted"]
        assert r.json()["action_times"] == []
        r = await http.post(f"/v1/instances/{vm}/recovery",
                            json={"paused": True, "reason": "<b>maintenance</b>"})
        assert r.status_code == 200
        assert r.json()["paused"] and r.json()["paused_reason"] == "<b>maintenance</b>"
        paused = await rig.fault_and_wait(fault(vm))
        assert paused["action"]["status"] == "skipped"
        assert "<b>maintenance</b>" in paused["action"]["reason"]
        r = await http.post(f"/v1/instances/{vm}/recovery", json={"paused": False})
        assert r.json()["paused"] is False and r.json()["paused_reason"] is None
        acted = await rig.fault_and_wait(fault(vm))
        assert acted["action"]["status"] == "issued"

        assert (await http.get(f"/v1/instances/{uuid.uuid4()}/recovery")).status_code == 404
        assert (await http.post(f"/v1/instances/{vm}/recovery",
                                json={"paused": "maybe"})).status_code == 422
        assert (await http.post(f"/v1/instances/{'x' * 65}/recovery",
                                json={"paused": True})).status_code == 422
        spec = (await http.get("/openapi.json")).json()
        assert {"/v1/instances/{uuid}/recovery", "/v1/instances/{uuid}/recovery/rearm"} <= set(
            spec["paths"])
        assert "RecoveryAction" in spec["components"]["schemas"]


async def test_a_known_instance_without_a_record_shows_a_clean_one(rig: Rig) -> None:
    from recovery_helpers import HOST, record

    vm = str(uuid.uuid4())
    await rig.c.hello(HOST, [record(vm)])
    async with _client(make_app(rig.c)) as http:
        r = (await http.get(f"/v1/instances/{vm}/recovery")).json()
    assert r == {"instance_uuid": vm, "mode": "libvirt", "paused": False,
                 "paused_reason": None, "exhausted": False, "exhausted_at": None,
                 "action_times": [], "updated_at": None}


async def test_every_recovery_series_exists_at_zero_from_the_start(rig: Rig) -> None:
    async with _client(make_app(rig.c)) as http:
        text = (await http.get("/metrics")).text
    for action in ("reset", "destroy", "none"):
        for status in ("issued", "succeeded", "failed", "skipped"):
            assert (f'nfvha_recovery_actions_total{{action="{action}",mode="libvirt",'
                    f'status="{status}"}} 0.0') in text
    assert "nfvha_recovery_exhausted_total 0.0" in text
    assert "nfvha_recovery_seconds_count 0.0" in text
    assert 'nfvha_reports_invalid_total{method="recovery_result"} 0.0' in text


@pytest.mark.system
async def test_pausing_and_rearming_need_an_admin_token(rig: Rig, real_keystone) -> None:
    """Tokens issued and validated by the real Keystone."""
    users = Users(real_keystone)
    app = make_app(rig.c)
    protect(app, users.tokens())
    operator, viewer = await users.login("operator"), await users.login("viewer")
    vm = str(uuid.uuid4())
    async with _client(app) as http:
        for path, body in ((f"/v1/instances/{vm}/recovery", {"paused": True}),
                           (f"/v1/instances/{vm}/recovery/rearm", None)):
            assert (await http.post(path, json=body)).status_code == 401
            assert (await http.post(path, json=body,
                                    headers={"X-Auth-Token": viewer})).status_code == 403
            ok = await http.post(path, json=body, headers={"X-Auth-Token": operator})
            assert ok.status_code == 200, ok.text
        assert (await http.get(f"/v1/instances/{vm}/recovery")).json()["paused"]
