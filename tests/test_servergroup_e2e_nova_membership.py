"""Groups from Nova (openstacksdk) through the controller's periodic sync, with
compute agents that know their instances by messaging socket name: the name
placeholders are replaced by Nova's records, broadcasts route by Nova's
groups, a Nova notification about a member reaches its peer, and Nova's
groups are read-only through REST."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from openstack.compute.v2.server import Server
from openstack.compute.v2.server_group import ServerGroup
from test_servergroup_e2e_inproc import World

from nfvha.controller.api import make_app


class _Compute:
    """The two openstacksdk compute-proxy calls the loader uses, returning real
    openstacksdk resources built from Nova API bodies (no Nova runs here)."""

    def __init__(self, groups, servers):
        self.groups, self.servers_ = groups, servers

    def server_groups(self, all_projects=False):
        return iter(self.groups)

    def servers(self, details=True, all_projects=False):
        return iter(self.servers_)


class _Conn:
    def __init__(self, groups, servers):
        self.compute = _Compute(groups, servers)


def _server(uuid, inst, host):
    return Server(**{"id": uuid, "name": inst.replace("instance", "vm"),
                     "OS-EXT-SRV-ATTR:instance_name": inst, "OS-EXT-SRV-ATTR:host": host,
                     "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:task_state": None,
                     "OS-EXT-STS:power_state": 1})


@pytest.fixture
async def world(sock_dir: Path):
    w = World(sock_dir)
    yield w
    await w.stop()


async def test_nova_groups_route_and_nova_notifications_reach_peers(world: World) -> None:
    await world.start({"cmp-1": ["instance-00000001", "instance-00000003"],
                       "cmp-2": ["instance-00000002"]})
    conn = _Conn([ServerGroup(**{"id": "g-nova", "name": "pair",
                                 "members": ["u1", "u2"], "policies": ["anti-affinity"]})],
                 [_server("u1", "instance-00000001", "cmp-1"),
                  _server("u2", "instance-00000002", "cmp-2"),
                  _server("u3", "instance-00000003", "cmp-1")])
    svc = world.ctl.servergroups
    svc.start_nova_sync(lambda: conn, period_s=0.1)
    for _ in range(100):
        if svc.groups.group("g-nova") is not None:
            break
        await asyncio.sleep(0.02)
    # the placeholder made from the socket name gave way to Nova's record
    assert svc.groups.instance("instance-00000001").uuid == "u1"
    p1, p2, p3 = (world.peers[f"instance-0000000{i}"] for i in (1, 2, 3))
    p1.broadcast("from nova member")
    (b,) = await p2.wait_for(lambda p: p.app("broadcast"))
    assert b["source_instance"] == "instance-00000001"
    await svc.on_nova_notification({
        "event_type": "compute.instance.update", "priority": "info",
        "publisher_id": "nova-compute:cmp-2", "timestamp": "2026-11-24 04:40:00.000000",
        "payload": {"instance_id": "u2", "host": "cmp-2", "state": "stopped",
                    "old_state": "active", "display_name": "vm-00000002"}})
    (n,) = await p1.wait_for(lambda p: p.app("notification"))
    assert n["data"]["payload"]["instance_id"] == "u2"
    assert n["data"]["payload"]["state"] == "stopped"
    await asyncio.sleep(0.2)
    assert p3.app() == [] and p2.app("notification") == []
    transport = httpx.ASGITransport(app=make_app(world.ctl))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.put("/v1/server-groups/g-nova", json={"name": "x", "members": ["u3"]})
        assert r.status_code == 409
        assert (await c.get("/v1/server-groups/g-nova")).json()["origin"] == "nova"
    # Nova drops the group: the next sync removes it
    conn.compute.groups = []
    for _ in range(100):
        if svc.groups.group("g-nova") is None:
            break
        await asyncio.sleep(0.02)
    assert svc.groups.group("g-nova") is None
