"""The stand-ins answer like the systems they imitate (status codes,
validation, duplicates) and fail exactly as often as they are told."""
from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from nfvha.standins.doctor import DoctorInspectorStandin
from nfvha.standins.masakari import MasakariStandin
from nfvha.standins.nova import NovaStandin
from nfvha.standins.vitrage import VitrageStandin
from nfvha.standins.webhook import WebhookStandin

VM = {"notification": {"type": "VM", "hostname": "c1",
                       "generated_time": "2026-11-24T03:00:00.000001",
                       "payload": {"event": "LIFECYCLE", "instance_uuid": "u1",
                                   "vir_domain_event": "STOPPED_FAILED"}}}


@pytest.mark.parametrize("cls,method,path,body", [
    (MasakariStandin, "POST", "/v1/notifications", VM),
    (NovaStandin, "POST", "/v2.1/servers/u1/action", {"os-resetState": {"state": "error"}}),
    (DoctorInspectorStandin, "PUT", "/events",
     [{"time": "t", "type": "compute.host.down", "details": {"hostname": "c1"}}]),
    (VitrageStandin, "POST", "/v1/event",
     {"time": "2026-11-24T03:00:00.000001", "type": "x", "details": {}}),
    (WebhookStandin, "POST", "/any/path", {"id": "e1"}),
])
async def test_fails_exactly_n_times_then_accepts(cls, method, path, body):
    async with cls() as s, httpx.AsyncClient(base_url=s.url) as h:
        s.fail_next(2)
        codes = [(await h.request(method, path, json=body)).status_code for _ in range(3)]
    assert codes[:2] == [503, 503] and 200 <= codes[2] < 300
    assert len(s.attempts) == 3 and len(s.received) == 1
    assert s.received[0].body == body


async def test_masakari_validates_and_detects_duplicates():
    async with MasakariStandin() as m, httpx.AsyncClient(base_url=m.url) as h:
        assert (await h.post("/v1/notifications", json={"x": 1})).status_code == 400
        bad_type = {"notification": {**VM["notification"], "type": "VMX"}}
        assert (await h.post("/v1/notifications", json=bad_type)).status_code == 400
        bad_time = {"notification": {**VM["notification"], "generated_time": "noon"}}
        assert (await h.post("/v1/notifications", json=bad_time)).status_code == 400
        first = await h.post("/v1/notifications", json=VM)
        assert first.status_code == 202
        assert first.json()["notification"]["status"] == "new"
        assert (await h.post("/v1/notifications", json=VM)).status_code == 409
        m.finish_all()  # processed: still a duplicate (Masakari goes by generated_time)
        assert (await h.post("/v1/notifications", json=VM)).status_code == 409
        later = datetime.fromisoformat(VM["notification"]["generated_time"].replace(
            "Z", "+00:00")) + timedelta(seconds=181)
        again = {"notification": {**VM["notification"], "generated_time": later.isoformat()}}
        assert (await h.post("/v1/notifications", json=again)).status_code == 202
        versions = (await h.get("/")).json()
        assert versions["versions"][0]["id"] == "v1.0"


async def test_nova_unknown_server_and_bad_body():
    async with NovaStandin(servers={"u1"}) as n, httpx.AsyncClient(base_url=n.url) as h:
        reset = {"os-resetState": {"state": "error"}}
        assert (await h.post("/v2.1/servers/u2/action", json=reset)).status_code == 404
        assert (await h.post("/v2.1/servers/u1/action",
                             json={"os-resetState": {"state": "melted"}})).status_code == 400
        ok = await h.post("/v2.1/servers/u1/action", json=reset)
        assert ok.status_code == 202 and ok.content == b""
    assert n.states == {"u1": "error"}


async def test_vitrage_requires_the_fraction_in_time():
    async with VitrageStandin() as v, httpx.AsyncClient(base_url=v.url) as h:
        r = await h.post("/v1/event", json={"time": "2026-11-24T03:00:00", "type": "x",
                                            "details": {}})
        assert r.status_code == 400


async def test_doctor_wants_a_list():
    async with DoctorInspectorStandin() as d, httpx.AsyncClient(base_url=d.url) as h:
        r = await h.put("/events", json={"time": "t", "type": "x", "details": {}})
        assert r.status_code == 400
