"""Server-group messaging through the real compute agent and controller
(in-process bus): routing to members only, status answers, heartbeat
notifications, REST groups that survive a restart, hostile guests."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from servergroup_wire_peer import WirePeer, envelope

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.controller.api import make_app
from nfvha.controller.service import Controller
from nfvha.protocol.sgsession import SessionConfig


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.peers: dict[str, WirePeer] = {}
        self.agents: dict[str, ComputeAgent] = {}
        self.deaf: list[asyncio.AbstractServer] = []

    async def start(self, layout: dict[str, list[str]], groups: object = None,
                    deaf: tuple[str, ...] = (), **agent_kw: object) -> None:
        self.bus = make_bus("inproc://")
        await self.bus.start()
        self.ctl = Controller(db_url=f"sqlite:///{self.root / 'db.sqlite'}", bus=self.bus,
                              server_groups=groups)
        await self.ctl.start()
        await self.bus.serve_controller(self.ctl)
        for host, names in layout.items():
            d = self.root / host
            d.mkdir(exist_ok=True)
            for n in names:
                if n in deaf:  # accepts the connection, never reads a byte
                    self.deaf.append(await asyncio.start_unix_server(
                        _deaf, path=str(d / f"cgcs.messaging.{n}.sock")))
                    continue
                p = WirePeer(d / f"cgcs.messaging.{n}.sock")
                await p.start()
                self.peers[n] = p
            agent = ComputeAgent(host, d, self.bus, scan_interval_s=0.05, **agent_kw)
            await agent.start()
            self.agents[host] = agent
        for p in self.peers.values():
            await asyncio.wait_for(p.connected.wait(), 10)
        # the controller knows where every instance is
        for _ in range(200):
            if all(self.ctl.servergroups.groups.instance(n) is not None
                   and self.ctl.servergroups.groups.instance(n).host for n in self.peers):
                break
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        for a in self.agents.values():
            await a.stop()
        await self.ctl.stop()
        await self.bus.stop()
        for p in self.peers.values():
            await p.close()
        for server in self.deaf:
            server.close()
        while _held:
            _held.pop().close()


_held: list[asyncio.StreamWriter] = []


async def _deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _held.append(writer)  # keep it open; never read


@pytest.fixture
async def world(sock_dir: Path):
    w = World(sock_dir)
    yield w
    await w.stop()


GROUPS = [{"id": "g1", "name": "pair", "members": ["a1", "a2", "b1"]},
          {"id": "g2", "name": "other", "members": ["b2", "a3"]}]


async def test_broadcast_reaches_members_on_both_hosts_and_nobody_else(world: World) -> None:
    await world.start({"host-a": ["a1", "a2", "a3"], "host-b": ["b1", "b2"]}, GROUPS)
    world.peers["a1"].broadcast("hello peers")
    for n in ("a2", "b1"):
        got = await world.peers[n].wait_for(lambda p: p.app("broadcast"))
        assert got == [{"version": 2, "msg_type": "broadcast", "source_instance": "a1",
                        "data": "hello peers"}]
    await asyncio.sleep(0.3)
    for n in ("a1", "a3", "b2"):  # sender and members of other groups: nothing
        assert world.peers[n].app() == [], n


async def test_status_query_answers_one_response_per_member_then_done(world: World) -> None:
    await world.start({"host-a": ["a1", "a2"], "host-b": ["b1"]}, GROUPS)
    world.peers["b1"].status_query(7)
    done = await world.peers["b1"].wait_for(lambda p: p.app("status_response_done"))
    assert done == [{"version": 2, "msg_type": "status_response_done", "seq": 7}]
    resp = world.peers["b1"].app("status_response")
    assert all(r["seq"] == 7 for r in resp)
    names = [r["data"]["instance_name"] for r in resp]
    assert names[0] == "b1" and sorted(names) == ["a1", "a2", "b1"]
    hosts = {r["data"]["instance_name"]: r["data"]["host"] for r in resp}
    assert hosts == {"a1": "host-a", "a2": "host-a", "b1": "host-b"}
    assert world.peers["a1"].app() == []  # nobody else hears the answer


async def test_heartbeat_failure_of_a_member_is_a_notification_to_its_peers(
        world: World) -> None:
    await world.start({"host-a": ["a1", "a2"], "host-b": ["b1", "b2"]}, GROUPS)
    ok = await world.ctl.instance_state(host="host-a", instance_uuid="a2", state="failed",
                                        at="2026-11-24T04:00:00+00:00")
    assert ok["ok"]
    for n in ("a1", "b1"):
        (note,) = await world.peers[n].wait_for(lambda p: p.app("notification"))
        assert note["data"]["event_type"] == "nfvha.instance.heartbeat"
        assert note["data"]["payload"]["instance_id"] == "a2"
        assert note["data"]["payload"]["heartbeat"] == "failed"
    await asyncio.sleep(0.2)
    assert world.peers["a2"].app() == [] and world.peers["b2"].app() == []


async def test_rest_groups_route_and_survive_a_controller_restart(world: World) -> None:
    await world.start({"host-a": ["a1"], "host-b": ["b1", "b2"]})
    transport = httpx.ASGITransport(app=make_app(world.ctl))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.put("/v1/server-groups/g9", json={"name": "rest", "members": ["a1", "b2"]})
        assert r.status_code == 200, r.text
        assert [m["host"] for m in r.json()["members"]] == ["host-a", "host-b"]
        assert (await c.put("/v1/server-groups/bad", json={"members": "a1"})).status_code \
            in (400, 422)
        assert (await c.get("/v1/server-groups/nope")).status_code == 404
    world.peers["a1"].broadcast("via rest group")
    await world.peers["b2"].wait_for(lambda p: p.app("broadcast"))
    assert world.peers["b1"].app() == []
    # restart the controller on the same store: the group is still there
    await world.ctl.stop()
    ctl = Controller(db_url=f"sqlite:///{world.root / 'db.sqlite'}", bus=world.bus)
    await ctl.start()
    world.ctl = ctl
    assert [g["id"] for g in ctl.servergroups.list_groups()] == ["g9"]
    transport = httpx.ASGITransport(app=make_app(ctl))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.delete("/v1/server-groups/g9")).status_code == 204
        assert (await c.get("/v1/server-groups")).json() == []
        assert (await c.delete("/v1/server-groups/g9")).status_code == 404


async def test_hostile_guest_is_nacked_and_cannot_spoof_or_slow_others(world: World) -> None:
    await world.start({"host-a": ["evil", "a2"], "host-b": ["b1"]},
                      [{"id": "g", "name": "", "members": ["evil", "a2", "b1"]}])
    evil = world.peers["evil"]
    # spoofed source_instance: stripped, the host stamps the real one
    evil.send(envelope({"version": 2, "msg_type": "broadcast", "data": "x",
                        "source_instance": "a2"}))
    (b,) = await world.peers["b1"].wait_for(lambda p: p.app("broadcast"))
    assert b["source_instance"] == "evil"
    # oversized data, garbage, wrong version, unknown type: each nacked, never relayed
    evil.broadcast("y" * 3051)
    evil.write_raw(b"\n{not json\n")
    evil.send(envelope({"version": 1, "msg_type": "broadcast", "data": "z"}))
    evil.send(envelope({"version": 2, "msg_type": "notification", "data": {}}))
    evil.write_raw(b"\n" + b"A" * 10000 + b"\n")
    nacks = await evil.wait_for(lambda p: len(p.app("nack")) >= 5 and p.app("nack"))
    assert {n["orig_msg_type"] for n in nacks} >= {"broadcast", "unknown", "notification"}
    # a flood: rate-limited (one nack, then silent drops) ...
    for i in range(500):
        evil.broadcast(f"flood {i}")
    await evil.wait_for(lambda p: any("rate limit" in n["log_msg"] for n in p.app("nack")))
    # ... while a well-behaved member's broadcast still reaches everyone at once
    world.peers["b1"].broadcast("still here")
    await world.peers["a2"].wait_for(
        lambda p: any(m["data"] == "still here" for m in p.app("broadcast")), timeout=5)
    got = [m["data"] for m in world.peers["a2"].app("broadcast")]
    assert sum(1 for d in got if d.startswith("flood")) <= 41  # the burst, no more
    assert not any(json.dumps(m).count("yyyy") for m in world.peers["b1"].app())
    assert world.agents["host-a"].messaging.stats()["violations"] >= 6


async def test_a_guest_that_never_reads_does_not_hold_up_delivery_to_others(
        world: World) -> None:
    # A generous rate limit, so the sender can push far more than the deaf
    # guest's socket buffers hold.
    await world.start({"host-a": ["s", "deaf"], "host-b": ["live"]},
                      [{"id": "g", "name": "", "members": ["s", "deaf", "live"]}],
                      deaf=("deaf",),
                      messaging_config=SessionConfig(instance="", rate_per_s=10000, burst=10000))
    await asyncio.sleep(0.3)  # the deaf channel is connected too
    n, blob = 400, "x" * 3000
    for i in range(n):
        world.peers["s"].broadcast(f"{i} {blob}")
        if i % 50 == 0:
            await asyncio.sleep(0)
    got = await world.peers["live"].wait_for(
        lambda p: len(p.app("broadcast")) >= n and p.app("broadcast"), timeout=20)
    assert [int(m["data"].split()[0]) for m in got] == list(range(n))  # all, in order
    stats = world.agents["host-a"].messaging.stats()
    assert stats["write_dropped"] > 0  # the deaf one's excess was dropped, not queued
    assert stats["connected"] == 2


async def test_broadcast_to_many_hosts_goes_as_one_fanout_and_still_only_to_members(
        world: World) -> None:
    await world.start({"h1": ["m1", "x1"], "h2": ["m2"], "h3": ["m3", "x3"],
                       "h4": ["m4", "x4"]},
                      [{"id": "g", "name": "", "members": ["m1", "m2", "m3", "m4"]},
                       {"id": "o", "name": "", "members": ["x1", "x3", "x4"]}])
    casts: list[str] = []
    real_fanout, real_cast = world.bus.fanout_compute, world.bus.cast_compute

    async def fanout(method: str, **kw: object) -> None:
        casts.append("fanout")
        await real_fanout(method, **kw)

    async def cast(host: str, method: str, **kw: object) -> None:
        casts.append(host)
        await real_cast(host, method, **kw)

    world.bus.fanout_compute, world.bus.cast_compute = fanout, cast  # type: ignore[method-assign]
    world.peers["m1"].broadcast("to three hosts")
    for n in ("m2", "m3", "m4"):
        await world.peers[n].wait_for(lambda p: p.app("broadcast"))
    assert casts == ["fanout"]  # one message to every compute; each took its part
    await asyncio.sleep(0.3)
    for n in ("m1", "x1", "x3", "x4"):
        assert world.peers[n].app() == [], n
    # two target hosts: direct casts
    casts.clear()
    world.peers["x1"].broadcast("to two")
    await world.peers["x4"].wait_for(lambda p: p.app("broadcast"))
    assert sorted(casts) == ["h3", "h4"]
