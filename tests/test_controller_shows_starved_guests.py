"""Guests a compute host starves of CPU (the host machine's Starved, listed
in the agent's `alive` fanout) show in GET /v1/hosts and as
nfvha_instances_starved{host}; a malformed list is refused and counted,
never stored."""
from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from nfvha.controller.api import make_app
from nfvha.controller.service import Controller

STARTED = "2026-12-02T08:00:00.000000+00:00"


async def test_starved_instances_reach_hosts_and_metrics(tmp_path: Path) -> None:
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], agent_down_after_s=30)
    await c.start()
    starved = str(uuid.uuid4())
    transport = httpx.ASGITransport(app=make_app(c))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as http:
            assert (await c.alive("c1", STARTED, 2, starved=[starved]))["ok"]
            [host] = (await http.get("/v1/hosts")).json()
            assert host["starved"] == [starved]
            metrics = (await http.get("/metrics")).text
            assert 'nfvha_instances_starved{host="c1"} 1.0' in metrics
            # the condition clears with the agent's next report
            assert (await c.alive("c1", STARTED, 2, starved=[]))["ok"]
            [host] = (await http.get("/v1/hosts")).json()
            assert host["starved"] == []
            assert 'nfvha_instances_starved{host="c1"} 0.0' in (await http.get("/metrics")).text
            # an agent that says nothing about starvation (an older one) keeps the last word
            assert (await c.alive("c1", STARTED, 2))["ok"]
    finally:
        await c.stop()


async def test_a_malformed_starved_list_is_refused_not_stored(tmp_path: Path) -> None:
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], agent_down_after_s=30)
    await c.start()
    try:
        for bad in ("x", [1], [""], ["a" * 65], [None], {"u": 1}, ["u"] * 10001):
            answer = await c.alive("c1", STARTED, 1, starved=bad)
            assert answer["ok"] is False and "starved" in answer["error"]
        assert c.hosts is None or "c1" not in c.hosts.hosts
    finally:
        await c.stop()
