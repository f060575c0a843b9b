"""The Nova stand-in's reboot and os-stop actions answer as Nova's api-ref
says: 202 with an empty body, 409 conflictingRequest while a task is in
progress (as often as a test asks), 404 itemNotFound for an unknown server,
400 badRequest for a bad body; os-resetState keeps working beside them."""
from __future__ import annotations

import httpx
import pytest

from nfvha.standins.nova import NovaStandin


async def test_reboot_and_stop_are_accepted_and_recorded() -> None:
    async with NovaStandin() as n, httpx.AsyncClient(base_url=n.url) as h:
        hard = await h.post("/v2.1/servers/u1/action", json={"reboot": {"type": "HARD"}})
        soft = await h.post("/v2.1/servers/u1/action", json={"reboot": {"type": "SOFT"}})
        stop = await h.post("/v2.1/servers/u2/action", json={"os-stop": None})
        reset = await h.post("/v2.1/servers/u2/action", json={"os-resetState": {
            "state": "error"}})
    assert [r.status_code for r in (hard, soft, stop, reset)] == [202] * 4
    assert hard.content == b"" and stop.content == b""
    assert n.actions == [("u1", "reboot", "HARD"), ("u1", "reboot", "SOFT"),
                         ("u2", "os-stop", None)]
    assert n.states == {"u2": "error"}


async def test_a_task_in_progress_answers_409_as_often_as_told() -> None:
    async with NovaStandin() as n, httpx.AsyncClient(base_url=n.url) as h:
        n.conflict_next(2)
        codes = [(await h.post("/v2.1/servers/u1/action",
                               json={"reboot": {"type": "HARD"}})) for _ in range(3)]
    assert [r.status_code for r in codes] == [409, 409, 202]
    assert codes[0].json()["conflictingRequest"]["code"] == 409
    assert n.actions == [("u1", "reboot", "HARD")] and len(n.attempts) == 3


@pytest.mark.parametrize("body", [
    {"reboot": {"type": "WARM"}}, {"reboot": {}}, {"reboot": "HARD"},
    {"reboot": {"type": "HARD", "extra": 1}}, {"os-stop": {"force": True}},
    {"os-stop": None, "reboot": {"type": "HARD"}}, [], "reboot",
])
async def test_bad_bodies_are_400(body) -> None:
    async with NovaStandin() as n, httpx.AsyncClient(base_url=n.url) as h:
        r = await h.post("/v2.1/servers/u1/action", json=body)
    assert r.status_code == 400 and "badRequest" in r.json()
    assert n.actions == []


async def test_an_unknown_server_is_404() -> None:
    async with NovaStandin(servers={"u1"}) as n, httpx.AsyncClient(base_url=n.url) as h:
        r = await h.post("/v2.1/servers/u9/action", json={"os-stop": None})
    assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404
    assert n.actions == []
