"""The REST API's bounds, each with its answer (issue 13): a body past
[api] max_body_bytes is a 413; one server group past [servergroup]
max_groups a 403; too many members or too long a name a 422 that says
which (the bounds are in the OpenAPI schema); lists page with limit/marker
and, without them, answer as before (the dashboard); non-finite or huge
numbers, lone surrogates and deep nesting are a 400 with a message, a
`since` out of datetime's range in UTC is the earliest/latest time, never
a 500; an invalid body leaves no cyclic garbage behind."""
from __future__ import annotations

import gc
import tracemalloc

import httpx
import pytest

from nfvha.controller import Controller
from nfvha.controller.api import make_app
from nfvha.controller.apibounds import ApiLimits

LIMITS = ApiLimits(max_body_bytes=8192, max_list=50, max_server_groups=3,
                   max_group_members=4, max_name_length=16)


@pytest.fixture
async def controller(tmp_path):
    c = Controller(f"sqlite:///{tmp_path}/api.sqlite", [], agent_down_after_s=0)
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
async def client(controller):
    transport = httpx.ASGITransport(app=make_app(controller, LIMITS),
                                    raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as h:
        yield h


def detail(r: httpx.Response) -> str:
    return str(r.json()["detail"])


async def test_a_body_past_the_limit_is_413(client):
    r = await client.put("/v1/server-groups/g", json={"name": "x" * 9000, "members": []})
    assert r.status_code == 413
    r = await client.put("/v1/server-groups/g", json={"name": "x", "members": ["a"]})
    assert r.status_code == 200


async def test_server_group_caps(client):
    for i in range(3):
        r = await client.put(f"/v1/server-groups/g{i}", json={"name": "n", "members": ["a"]})
        assert r.status_code == 200, r.text
    r = await client.put("/v1/server-groups/g3", json={"name": "n", "members": ["a"]})
    assert r.status_code == 403 and "max_groups" in detail(r)
    # replacing an existing group is no new group
    r = await client.put("/v1/server-groups/g0", json={"name": "m", "members": ["a", "b"]})
    assert r.status_code == 200
    r = await client.put("/v1/server-groups/g0", json={"name": "m",
                                                       "members": list("abcde")})
    assert r.status_code == 422 and "at most 4 items" in detail(r)
    r = await client.put("/v1/server-groups/g0", json={"name": "m" * 17, "members": []})
    assert r.status_code == 422 and "at most 16 characters" in detail(r)
    r = await client.put("/v1/server-groups/g0", json={"name": "m", "members": ["a" * 17]})
    assert r.status_code == 422 and "at most 16 characters" in detail(r)
    for bad in ("g" * 17, "%20"):
        r = await client.put(f"/v1/server-groups/{bad}", json={"name": "m", "members": []})
        assert r.status_code == 422, r.text
    r = await client.put("/v1/server-groups/g0", json={"name": "m", "members": ["a"],
                                                       "extra": 1})
    assert r.status_code == 422 and "extra" in detail(r)
    r = await client.put("/v1/server-groups/g0", json={"name": "m", "members": [" "]})
    assert r.status_code == 422
    assert (await client.get("/v1/server-groups/g0")).json()["members"][1]["member"] == "b"


async def test_lists_page_with_limit_and_marker_and_answer_in_full_without(controller,
                                                                            client):
    for i in (3, 1, 2):
        assert (await client.put(f"/v1/server-groups/g{i}",
                                 json={"name": "n", "members": []})).status_code == 200
        await controller.instance_state(host=f"h{i % 2}", instance_uuid=f"u{i}",
                                        state="enabled")
    every = (await client.get("/v1/server-groups")).json()
    assert len(every) == 3  # as the dashboard reads it
    first = (await client.get("/v1/server-groups", params={"limit": 2})).json()
    assert [g["id"] for g in first] == ["g1", "g2"]
    rest = (await client.get("/v1/server-groups",
                             params={"limit": 2, "marker": "g2"})).json()
    assert [g["id"] for g in rest] == ["g3"]
    assert (await client.get("/v1/server-groups", params={"limit": 51})).status_code == 422
    every = (await client.get("/v1/instances")).json()
    assert [i["uuid"] for i in every] == ["u2", "u1", "u3"]  # by host, then uuid, as before
    pages = [(await client.get("/v1/instances", params={"limit": 1, "marker": m})).json()
             for m in ("u0", "u1", "u2", "u3")]
    assert [[i["uuid"] for i in p] for p in pages] == [["u1"], ["u2"], ["u3"], []]


async def test_since_out_of_range_in_utc_is_the_earliest_or_latest_time(controller, client):
    from tests.test_controller_helpers import fault

    ev = fault()
    await controller.fault(ev)
    r = await client.get("/v1/events", params={"since": "0001-01-01T00:00:00+01:00"})
    assert r.status_code == 200 and [e["id"] for e in r.json()] == [ev["id"]]
    r = await client.get("/v1/events", params={"since": "9999-12-31T23:59:59-01:00"})
    assert r.status_code == 200 and r.json() == []
    r = await client.get("/v1/events", params={"since": "10000-01-01T00:00:00"})
    assert r.status_code == 422


@pytest.mark.parametrize("body,says", [
    (b'{"name": NaN, "members": []}', "NaN"),
    (b'{"name": "x", "members": [-Infinity]}', "Infinity"),
    (b'{"name": "x", "members": [1e999]}', "too large"),
    (b'{"name": "x", "members": [18446744073709551616]}', "64 bits"),
    (b'{"name": "x", "members": [' + b"9" * 5000 + b"]}", "not JSON"),
    (b'{"name": "\\udcff", "members": []}', "surrogate"),
    (b'{"name": "x", "members": ' + b"[" * 40 + b"]" * 40 + b"}", "deeper"),
    (b'{"name": "x", "members": \xff}', "not JSON"),
])
async def test_json_nfvha_cannot_keep_is_400_with_a_message(client, body, says):
    r = await client.put("/v1/server-groups/g", content=body,
                         headers={"content-type": "application/json"})
    assert r.status_code == 400 and says in detail(r), r.text


async def test_invalid_json_and_invalid_values_are_422(client):
    r = await client.put("/v1/server-groups/g", content=b'{"name": ',
                         headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = await client.post("/v1/instances/u/actions", json={"action": "stop",
                                                           "timeout_ms": 2**40})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "timeout_ms"]
    r = await client.post("/v1/instances/u/recovery", json={"paused": "x" * 3000})
    assert r.status_code == 422
    assert len(r.text) < 1000  # the offending input is echoed cut short


async def test_an_invalid_body_leaves_no_cyclic_garbage(controller):
    """FastAPI answered invalid JSON with a validation error raised from a
    frame that holds it and the body: a cycle that only a full collection
    frees, which the tuned collector rarely runs (issue 13). Measured: the
    bytes a collection frees after 20 invalid bodies of 60 KB each (any 20
    requests through httpx and Starlette leave ~100 KB of cycles)."""
    app = make_app(controller)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    bodies = [b'{"name": "x", "members": [' + b'"aaaaaaaa",' * 5500,  # not JSON
              b'{"name": 5, "members": [' + b'"aaaaaaaa",' * 5500 + b'"a"]}']  # 422
    async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as h:
        for body in bodies:  # warm up
            await h.put("/v1/server-groups/g", content=body,
                        headers={"content-type": "application/json"})
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            for i in range(20):
                r = await h.put("/v1/server-groups/g", content=bodies[i % 2],
                                headers={"content-type": "application/json"})
                assert r.status_code == 422
            held = tracemalloc.get_traced_memory()[0]
            gc.collect()
            freed = held - tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
            gc.enable()
    assert freed < 20 * 60_000 / 4, freed  # with the cycle: every body, twice


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store_client(request, tmp_path):
    from tests.test_controller_helpers import db_urls

    gen = db_urls(request, tmp_path)
    c = Controller(next(gen), [], agent_down_after_s=0)
    await c.start()
    transport = httpx.ASGITransport(app=make_app(c), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as h:
        yield c, h
    await c.stop()
    gen.close()


async def test_a_nul_is_never_a_500_even_on_postgresql(any_store_client):
    """PostgreSQL cannot store a NUL: a lookup with one is a 404, a group or
    a report holding one is refused, a free-text reason loses it."""
    controller, client = any_store_client
    for path in ("/v1/instances/a%00b", "/v1/events/a%00b", "/v1/instances/a%00b/recovery"):
        r = await client.get(path)
        assert r.status_code == 404, (path, r.text)
    assert (await client.delete("/v1/hosts/h%00")).status_code == 404
    r = await client.post("/v1/instances/a%00b/actions", json={"action": "stop"})
    assert r.status_code == 404
    r = await client.put("/v1/server-groups/g", json={"name": "a\x00", "members": []})
    assert r.status_code == 422
    r = await client.put("/v1/server-groups/g", json={"name": "a", "members": ["b\x00"]})
    assert r.status_code == 422
    r = await client.post("/v1/instances/u1/recovery", json={"paused": True,
                                                             "reason": "a\x00b"})
    assert r.status_code == 200 and r.json()["paused_reason"] == "ab"
    answer = await controller.instance_state(host="h", instance_uuid="u\x00", state="enabled")
    assert not answer["ok"]
    answer = await controller.sg_instances("h", ["i\x00", "i-1"])
    assert answer == {"ok": True, "instances": 1, "refused": 1}
