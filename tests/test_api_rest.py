"""The REST API through a real HTTP client: shapes, 404s, ?since=, health,
Prometheus metrics, the OpenAPI document, an extra router, a real socket."""
from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
import pytest
from fastapi import APIRouter

from nfvha.controller import Controller
from nfvha.controller.api import ApiServer, make_app, serve
from nfvha.controller.reporters import Retry
from tests.test_controller_helpers import fault


class Sink:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail

    async def deliver(self, event):
        if self.fail:
            raise Retry("HTTP 503: down")
        return None


@pytest.fixture
async def controller(tmp_path):
    c = Controller(f"sqlite:///{tmp_path}/api.sqlite", [Sink("ok"), Sink("down", fail=True)],
                   retry_base_s=0.5, retry_max_s=1.0)
    await c.start()
    yield c
    if c.started:
        await c.stop()


@pytest.fixture
async def client(controller):
    transport = httpx.ASGITransport(app=make_app(controller))
    async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as h:
        yield h


def is_utc_micro(ts: str) -> bool:
    parsed = datetime.fromisoformat(ts)
    return (parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0
            and ts.endswith("+00:00") and len(ts.split(".")[1]) == len("123456+00:00"))


async def test_instances_list_and_get(controller, client):
    await controller.instance_state(host="c1", instance_uuid="u1", state="enabled",
                                    health="healthy", interval_ms=1000,
                                    corrective_action="reboot", name="vm-1",
                                    at="2026-11-24T03:00:00Z")
    await controller.instance_state(host="c1", instance_uuid="u2", state="waiting")
    r = await client.get("/v1/instances")
    assert r.status_code == 200
    by = {i["uuid"]: i for i in r.json()}
    assert by["u1"]["host"] == "c1" and by["u1"]["name"] == "vm-1"
    assert by["u1"]["heartbeat"] == {"state": "enabled", "health": "healthy",
                                     "interval_ms": 1000}
    assert by["u2"]["heartbeat"] == {"state": "waiting", "health": None, "interval_ms": None}
    assert by["u1"]["state_at"] == "2026-11-24T03:00:00.000000+00:00"
    assert is_utc_micro(by["u1"]["updated_at"])
    one = await client.get("/v1/instances/u1")
    assert one.status_code == 200 and one.json() == by["u1"]
    missing = await client.get("/v1/instances/nope")
    assert missing.status_code == 404


async def test_events_with_deliveries_newest_last_and_since(controller, client):
    evs = [fault() for _ in range(3)]
    for ev in evs:
        await controller.fault(ev)
        await asyncio.sleep(0.002)  # distinct received_at
    for _ in range(200):
        got = (await client.get("/v1/events")).json()
        if all(any(d["sink"] == "ok" and d["status"] == "delivered" for d in e["deliveries"])
               for e in got):
            break
        await asyncio.sleep(0.01)
    assert [e["id"] for e in got] == [e["id"] for e in evs]
    first = got[0]
    assert set(first) >= {"id", "instance_uuid", "host", "kind", "corrective_action",
                          "detail", "detected_at", "received_at", "deliveries"}
    assert is_utc_micro(first["detected_at"]) and is_utc_micro(first["received_at"])
    d = {x["sink"]: x for x in first["deliveries"]}
    assert d["ok"]["status"] == "delivered" and is_utc_micro(d["ok"]["delivered_at"])
    assert d["down"]["status"] == "pending" and d["down"]["attempts"] >= 1
    assert d["down"]["last_error"] == "HTTP 503: down"
    later = await client.get("/v1/events", params={"since": got[0]["received_at"]})
    assert [e["id"] for e in later.json()] == [e["id"] for e in evs[1:]]
    naive = got[1]["received_at"].replace("+00:00", "")  # naive = UTC
    assert [e["id"] for e in (await client.get("/v1/events", params={"since": naive})).json()
            ] == [evs[2]["id"]]
    assert (await client.get("/v1/events", params={"since": "not a time"})).status_code == 422
    assert [e["id"] for e in (await client.get("/v1/events", params={"limit": 1})).json()
            ] == [evs[2]["id"]]
    one = await client.get(f"/v1/events/{evs[1]['id']}")
    assert one.json()["id"] == evs[1]["id"]
    assert (await client.get("/v1/events/nope")).status_code == 404


async def test_healthz_and_metrics(controller, client):
    h = await client.get("/healthz")
    assert h.status_code == 200 and h.json() == {"status": "ok", "store": True}
    await controller.fault(fault(kind="unhealthy"))
    for _ in range(300):  # until the "ok" sink acked
        m = await client.get("/metrics")
        if 'nfvha_delivery_latency_seconds_count{sink="ok"} 1.0' in m.text:
            break
        await asyncio.sleep(0.01)
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert 'nfvha_faults_received_total{kind="unhealthy"} 1.0' in m.text
    assert 'nfvha_delivery_latency_seconds_count{sink="ok"} 1.0' in m.text
    assert 'nfvha_delivery_attempts_total{sink="down"}' in m.text
    await controller.stop()
    h = await client.get("/healthz")
    assert h.status_code == 503 and h.json()["status"] == "unavailable"


async def test_openapi_lists_the_paths_and_a_router_can_be_added(controller, client):
    app = make_app(controller)
    extra = APIRouter(prefix="/v1")

    @extra.get("/server-groups")
    async def groups() -> list[dict]:
        return []

    app.include_router(extra)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as h:
        doc = (await h.get("/openapi.json")).json()
        assert (await h.get("/v1/server-groups")).json() == []
    assert {"/v1/instances", "/v1/instances/{uuid}", "/v1/events", "/healthz", "/metrics",
            "/v1/server-groups"} <= set(doc["paths"])
    params = {p["name"] for p in doc["paths"]["/v1/events"]["get"]["parameters"]}
    assert {"since", "limit"} <= params


async def test_real_socket_with_uvicorn(controller):
    server = ApiServer(make_app(controller), "127.0.0.1", 0)
    port = await server.start()
    try:
        async with httpx.AsyncClient() as h:
            r = await h.get(f"http://127.0.0.1:{port}/healthz")
            assert r.status_code == 200
            r = await h.get(f"http://127.0.0.1:{port}/v1/instances")
            assert r.json() == []
    finally:
        await server.stop()


async def test_serve_runs_until_cancelled(controller):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    task = asyncio.create_task(serve(make_app(controller), "127.0.0.1", port))
    try:
        async with httpx.AsyncClient() as h:
            for _ in range(200):
                try:
                    r = await h.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            assert r.status_code == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
