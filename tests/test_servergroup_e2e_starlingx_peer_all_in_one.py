"""A peer that speaks only StarlingX's wire format (base layer v2, address
``cgcs.server_grp``) on ``cgcs.messaging.<name>.sock`` sockets served by
``nfvha all-in-one --instances-dir DIR`` (a subprocess) can broadcast,
receive and query; the group is set through ``PUT /v1/server-groups/{id}``."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from conftest import free_port
from servergroup_wire_peer import WirePeer


async def test_starlingx_wire_peers_broadcast_receive_and_query(sock_dir: Path) -> None:
    inst = sock_dir / "instances"
    inst.mkdir()
    peers = {n: WirePeer(inst / f"cgcs.messaging.{n}.sock")
             for n in ("instance-00000001", "instance-00000002", "instance-00000003")}
    for p in peers.values():
        await p.start()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    log = sock_dir / "aio.log"
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfvha.cli.main", "all-in-one", "--instances-dir", str(inst),
            "--api", f"127.0.0.1:{port}", "--db", f"sqlite:///{sock_dir / 'db.sqlite'}",
            stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=api, timeout=5) as c:
            while True:
                try:
                    r = await c.put("/v1/server-groups/ha-pair", json={
                        "name": "ha-pair",
                        "members": ["instance-00000001", "instance-00000002"]})
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    await asyncio.sleep(0.2)
            assert r.status_code == 200, r.text
            for p in peers.values():
                await asyncio.wait_for(p.connected.wait(), 20)
            # placement arrives from the compute agent's scan: wait for it
            while True:
                g = (await c.get("/v1/server-groups/ha-pair")).json()
                if all(m["host"] for m in g["members"]):
                    break
                assert time.monotonic() < deadline, g
                await asyncio.sleep(0.1)
        one, two, three = peers.values()
        one.broadcast("I am active")
        (b,) = await two.wait_for(lambda p: p.app("broadcast"))
        assert b == {"version": 2, "msg_type": "broadcast",
                     "source_instance": "instance-00000001", "data": "I am active"}
        _, raw = two.received[0]
        assert raw["version"] == 2 and raw["dest_addr"] == "cgcs.server_grp"
        two.broadcast("ack")
        await one.wait_for(lambda p: p.app("broadcast"))
        two.status_query(41)
        await two.wait_for(lambda p: p.app("status_response_done"))
        members = [m["data"] for m in two.app("status_response")]
        assert [m["instance_name"] for m in members] == ["instance-00000002",
                                                          "instance-00000001"]
        assert all(m["host"] for m in members)
        await asyncio.sleep(0.3)
        assert three.app() == []  # outside the group: hears nothing
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except asyncio.TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        for p in peers.values():
            await p.close()
