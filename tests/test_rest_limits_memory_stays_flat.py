"""The controller's memory stays flat under hostile request bodies (issue 13):
a real controller process (nfvha all-in-one) gets 1,000 of them (invalid
JSON, valid JSON that fails validation with a large list inside, NaN,
lone surrogates, deep nesting, bodies past the limit) and its RSS grows by
less than a bound. Before the fix each invalid body stayed alive as cyclic
garbage (a 10 MB one cost ~20 MB) and a body past any size was read whole.

Every answer is a 4xx with a message, never a 500, and the connection is
kept alive."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

pytestmark = pytest.mark.slow

BODY = 128 * 1024  # each hostile body (1,000 of them: 128 MB through the API)
# RSS growth allowed over the 1,000; before the fix: +48 MB at 64 KB bodies
LIMIT = 40 * 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def hostile_bodies() -> list[tuple[str, str, bytes, set[int]]]:
    """(method, path, body, statuses expected)."""
    big_list = json.dumps(list(range(BODY // 8)))[: BODY - 40]
    big_list = big_list[: big_list.rfind(",")] + "]"
    members = ("PUT", "/v1/server-groups/g1")
    return [
        (*members, b'{"name": "x", "members": [' + b"1," * (BODY // 2), {422}),  # not JSON
        (*members, ('{"name": 5, "members": ' + big_list + "}").encode(), {422}),
        (*members, b'{"name": "x", "members": [NaN' + b", 1" * (BODY // 4) + b"]}", {400}),
        (*members, b'{"name": "\\udcff", "members": ["' + b"a" * BODY + b'"]}', {400}),
        (*members, b"[" * 100_000 + b"]" * 100_000, {400}),
        (*members, b'{"name": "x", "members": ["' + b"a" * (2 * 1024 * 1024) + b'"]}', {413}),
        ("POST", "/v1/instances/u1/actions",
         b'{"action": "stop", "timeout_ms": 1e999, "pad": "' + b"p" * BODY + b'"}', {400}),
        ("POST", "/v1/instances/u1/recovery",
         ('{"paused": "maybe", "reason": ' + big_list + "}").encode(), {422}),
    ]


async def test_rss_stays_flat_over_1000_hostile_bodies(all_in_one_controller):
    proc = all_in_one_controller.proc
    bodies = hostile_bodies()
    async with httpx.AsyncClient(base_url=all_in_one_controller.url, timeout=30) as c:

        async def send(i: int) -> None:
            method, path, body, want = bodies[i % len(bodies)]
            r = await c.request(method, path, content=body,
                                headers={"content-type": "application/json"})
            assert r.status_code in want, (i, path, body[:60], r.status_code, r.text[:300])
            if r.status_code == 413:  # Starlette's own answer, plain text
                assert r.text == "Content Too Large"
            else:
                assert r.json()["detail"], r.text[:300]

        for i in range(2 * len(bodies)):  # warm up: every path, every error once
            await send(i)
        before = rss(proc.pid)

        async def client(k: int) -> None:  # 4 connections: the server stays busy
            for i in range(k, 1000, 4):
                await send(i)

        await asyncio.gather(*(client(k) for k in range(4)))
        after = rss(proc.pid)
        # the controller still works and answers normally
        ok = await c.put("/v1/server-groups/g1", json={"name": "g", "members": ["a"]})
        assert ok.status_code == 200, ok.text
    print(f"RSS {before / 2**20:.1f} MB -> {after / 2**20:.1f} MB over 1000 hostile bodies")
    assert after - before < LIMIT, (before, after)
