"""Controllers that share one store and one bus are equal for server groups:
a group made through controller A's REST API routes broadcasts, answers
status queries and tells peers of state changes when the compute agents'
messages reach controller B, and still after A is killed with SIGKILL (and
a vote asked through either is answered to the one that asked);
group changes on one are seen by the others within a second (a signal on
the bus, or, if that is lost, the store's fingerprint); a member's state
change heard by one is known to all, so the next change is told once,
by whichever hears it; a controller that starts later knows every group
and placement before it serves.

The guests are raw StarlingX-wire peers (tests/servergroup_wire_peer.py)
on the compute agents' messaging sockets.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import oslo_messaging
import pytest
from conftest import CastRecorder, free_port, poll, require_rabbitmq, spawn_nfvha, stop_processes
from oslo_config import cfg
from servergroup_wire_peer import WirePeer

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.controller.api import make_app
from nfvha.controller.servergroup_service import ServerGroupService
from nfvha.controller.service import Controller
from nfvha.controller.store import Store
from nfvha.demo.qemu_pty import PtyChannel
from tests.test_controller_helpers import db_urls


@pytest.fixture(params=["postgresql"])
def server_db(request, tmp_path):
    gen = db_urls(request, tmp_path)
    yield next(gen)
    gen.close()


async def _until(cond: Any, timeout: float, what: str) -> float:
    """Seconds until `cond()` held; fails after `timeout`."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def _placed(ctl: Controller, names: dict[str, str]) -> bool:
    groups = ctl.servergroups.groups
    return all((r := groups.instance(n)) is not None and r.host == h for n, h in names.items())


def _notes(peer: WirePeer) -> list[dict[str, Any]]:
    return [m["data"] for m in peer.app("notification")]


async def test_state_heard_by_one_controller_is_known_to_all_and_told_once(
        sock_dir: Path, server_db: str) -> None:
    """In one process (in-process bus, which spreads casts over the
    controllers like RabbitMQ), on one PostgreSQL."""
    bus = make_bus("inproc://")
    await bus.start()
    a = Controller(server_db, bus=bus, controller_id="ctl-a")
    b = Controller(server_db, bus=bus, controller_id="ctl-b")
    peers: dict[str, WirePeer] = {}
    agents: list[ComputeAgent] = []
    late: Controller | None = None
    try:
        for ctl in (a, b):
            await ctl.start()
            await bus.serve_controller(ctl)
        layout = {"host-a": ["a1", "a2"], "host-b": ["b1", "bx"]}
        for host, names in layout.items():
            d = sock_dir / host
            d.mkdir()
            for n in names:
                peers[n] = WirePeer(d / f"cgcs.messaging.{n}.sock")
                await peers[n].start()
            agent = ComputeAgent(host, d, bus, scan_interval_s=0.05)
            await agent.start()
            agents.append(agent)
        for p in peers.values():
            await asyncio.wait_for(p.connected.wait(), 10)
        where = {"a1": "host-a", "a2": "host-a", "b1": "host-b", "bx": "host-b"}
        # the agents' placement reaches both controllers (a fanout)
        await _until(lambda: _placed(a, where) and _placed(b, where), 10, "placed on both")

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(a)),
                                     base_url="http://a") as rest_a:
            r = await rest_a.put("/v1/server-groups/g1",
                                 json={"name": "trio", "members": ["a1", "a2", "b1"]})
            assert r.status_code == 200, r.text
            took = await _until(lambda: b.servergroups.groups.group("g1") is not None, 2,
                                "B knows the group made on A")
            print(f"group made on A known to B after {took * 1000:.1f} ms")

            # a2 fails: controller A hears it and tells a1 and b1, once
            assert (await a.instance_state(host="host-a", instance_uuid="a2", state="failed",
                                           at="2026-12-01T10:00:00+00:00"))["ok"]
            for n in ("a1", "b1"):
                await peers[n].wait_for(lambda p: _notes(p))
            await _until(lambda: b.servergroups.groups.instance("a2").heartbeat == "failed",
                         2, "B knows a2 failed")
            # a2 is back: this time B hears it, and knows it is news
            assert (await b.instance_state(host="host-a", instance_uuid="a2", state="enabled",
                                           at="2026-12-01T10:00:05+00:00"))["ok"]
            for n in ("a1", "b1"):
                await peers[n].wait_for(lambda p: len(_notes(p)) == 2)
            await asyncio.sleep(0.3)
            for n in ("a1", "b1"):
                states = [d["payload"]["heartbeat"] for d in _notes(peers[n])]
                assert states == ["failed", "enabled"], (n, states)
            assert peers["a2"].app("notification") == [] and peers["bx"].app() == []

            # status answers are the same through either controller (the
            # in-process bus alternates: two queries, one each)
            for seq in (1, 2):
                peers["b1"].status_query(seq)
                await peers["b1"].wait_for(
                    lambda p, s=seq: any(m["seq"] == s for m in p.app("status_response_done")))
            for seq in (1, 2):
                resp = {m["data"]["instance_name"]: m["data"]
                        for m in peers["b1"].app("status_response") if m["seq"] == seq}
                assert sorted(resp) == ["a1", "a2", "b1"], resp
                assert resp["a2"]["heartbeat"] == "enabled" and resp["a2"]["host"] == "host-a"
                assert resp["b1"]["host"] == "host-b"
            assert a.servergroups.counters["status_queries"] == 1
            assert b.servergroups.counters["status_queries"] == 1

            # a group written while the signal is lost (straight into the
            # store) is found by the fingerprint read within about a second
            store = Store(server_db)
            try:
                store.put_server_group("g2", "quiet", ["bx", "a1"])
            finally:
                store.close()
            took = await _until(lambda: a.servergroups.groups.group("g2") is not None
                                and b.servergroups.groups.group("g2") is not None, 3,
                                "a group written without the signal")
            print(f"group written without the signal known after {took * 1000:.0f} ms")
            assert (await rest_a.delete("/v1/server-groups/g2")).status_code == 204
            await _until(lambda: b.servergroups.groups.group("g2") is None, 2,
                         "B forgets the group deleted on A")

            # a state change told on the bus and lost: B takes it from the
            # store once it settled (every 10 s; called here), not a fresh one
            store = Store(server_db)
            try:
                store.upsert_instance({"uuid": "a1", "host": "host-a", "state": "failed"},
                                      received_at=datetime.now(timezone.utc)
                                      - timedelta(seconds=5))
                store.upsert_instance({"uuid": "b1", "host": "host-b", "state": "failed"})
            finally:
                store.close()
            assert await b.servergroups.refresh_states() == 1
            assert b.servergroups.groups.instance("a1").heartbeat == "failed"
            assert b.servergroups.groups.instance("b1").heartbeat != "failed"

        # a controller that starts now knows groups and placement before it serves
        late = Controller(server_db, bus=bus, controller_id="ctl-c")
        await late.start()
        assert late.servergroups.groups.group("g1") is not None
        assert _placed(late, where)
        assert late.servergroups.groups.instance("a2").heartbeat == "enabled"
    finally:
        for agent in agents:
            await agent.stop()
        for ctl in (late, a, b):
            if ctl is not None and ctl.store is not None:
                await ctl.stop()
        await bus.stop()
        for p in peers.values():
            await p.close()


def _publish(url: str, topic: str, member: str, host: str, state: str) -> None:
    # As nova-compute does: messagingv2 driver, control_exchange "nova".
    oslo_messaging.get_notification_transport(cfg.CONF, url=url).cleanup()
    cfg.CONF.set_override("control_exchange", "nova")
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=url)
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id=f"nova-compute:{host}", driver="messagingv2",
            topics=[topic])
        notifier.info({}, "instance.update", {
            "nova_object.name": "InstanceUpdatePayload", "nova_object.version": "1.8",
            "nova_object.namespace": "nova", "nova_object.data": {
                "uuid": member, "host": host, "state": state, "task_state": None,
                "power_state": "running", "display_name": "db-standby"}})
    finally:
        cfg.CONF.clear_override("control_exchange")
        transport.cleanup()


@pytest.mark.system
@pytest.mark.slow
async def test_group_made_on_a_works_through_b_and_after_a_is_killed(
        sock_dir: Path, server_db: str) -> None:
    """Controller A and the compute agents are processes, controller B (and
    C, started last) run here; RabbitMQ and PostgreSQL are real."""
    url = require_rabbitmq()
    run = uuid.uuid4().hex[:8]
    prefix, topic = f"nfvha-sgshare-{run}", f"nfvha_sgshare_{run}"
    nova_member = str(uuid.uuid4())
    common = sock_dir / "common.conf"
    common.write_text(
        f"[DEFAULT]\ncontrol_exchange = {prefix}\n"
        f"[bus]\ntransport_url = {url}\n"
        f"[database]\nconnection = {server_db}\n"
        f"[nova]\nnotifications = true\n"
        f"notification_topics = {topic}\nnotification_pool = {prefix}\n")
    a_conf = sock_dir / "a.conf"
    a_conf.write_text("[DEFAULT]\ncontroller_id = ctl-a\n")
    api_a = f"http://127.0.0.1:{(port := free_port())}"
    log = sock_dir / "services.log"
    hosts = {"a": f"cmp-a-{run}", "b": f"cmp-b-{run}"}
    layout = {"a": ["a1", "a2"], "b": ["b1", "bx"]}
    where = {n: hosts[h] for h, names in layout.items() for n in names}
    peers: dict[str, WirePeer] = {}
    procs: list[Any] = []
    ctl_a = await spawn_nfvha("controller", "--config-file", str(common), "--config-file",
                              str(a_conf), "--api", f"127.0.0.1:{port}", log=log)
    procs.append(ctl_a)
    bus_b = make_bus(url, prefix=prefix)
    bus_c = make_bus(url, prefix=prefix)
    b = Controller(server_db, bus=bus_b, controller_id="ctl-b")
    running: list[Controller] = []  # started here, to stop at the end
    try:
        async with httpx.AsyncClient(base_url=api_a, timeout=10) as rest_a:
            await poll(lambda: rest_a.get("/healthz"), 60, "controller A up")
            await bus_b.start()
            await b.start()
            running.append(b)
            await bus_b.serve_controller(b)
            await bus_b.listen_notifications("nova", [topic], b.servergroups.on_nova_notification,
                                             pool=prefix)
            for h, names in layout.items():
                d = sock_dir / h
                d.mkdir()
                for n in names:
                    peers[n] = WirePeer(d / f"cgcs.messaging.{n}.sock")
                    await peers[n].start()
                conf = sock_dir / f"{h}.conf"
                conf.write_text(f"[DEFAULT]\nhost = {hosts[h]}\n"
                                f"[heartbeat]\ninstances_dir = {d}\n")
                procs.append(await spawn_nfvha("compute", "--config-file", str(common),
                                               "--config-file", str(conf), log=log))
            for p in peers.values():
                await asyncio.wait_for(p.connected.wait(), 30)
            await _until(lambda: _placed(b, where), 20, "B knows every placement")

            r = await rest_a.put("/v1/server-groups/g1", json={
                "name": "trio", "members": ["a1", "a2", "b1", nova_member]})
            assert r.status_code == 200, r.text
            took = await _until(lambda: b.servergroups.groups.group("g1") is not None, 2,
                                "B knows the group made on A")
            print(f"group made on A known to B after {took * 1000:.1f} ms")
            r = await rest_a.put("/v1/server-groups/g2", json={"members": ["bx"]})
            assert r.status_code == 200
            await _until(lambda: b.servergroups.groups.group("g2") is not None, 2, "g2 on B")
            assert (await rest_a.delete("/v1/server-groups/g2")).status_code == 204
            took = await _until(lambda: b.servergroups.groups.group("g2") is None, 2,
                                "B forgets the group deleted on A")
            print(f"group deleted on A gone from B after {took * 1000:.1f} ms")

            # broadcasts spread over both controllers; every one reaches both peers
            sent = await _broadcasts(peers, "both", 20)
            assert b.servergroups.counters["broadcasts"] >= 1, "none went through B"
            assert b.servergroups.counters["broadcasts"] < sent, "none went through A"

            # a member's Nova state change: told to the peers once (by
            # whichever controller had it), and known to both
            await asyncio.get_running_loop().run_in_executor(
                None, _publish, url, topic, nova_member, hosts["b"], "error")
            for n in ("a1", "a2", "b1"):
                await peers[n].wait_for(lambda p: _notes(p))

            async def a_knows() -> bool:
                g = (await rest_a.get("/v1/server-groups/g1")).json()
                return any(m["member"] == nova_member and m["state"] == "error"
                           for m in g["members"])

            await poll(a_knows, 5, "A knows the member's state")
            await _until(lambda: b.servergroups.groups.instance(nova_member).state == "error",
                         5, "B knows the member's state")
            for seq in range(1, 5):  # answered by both controllers in turn
                answer = await _status(peers["a2"], seq)
                assert answer[nova_member]["state"] == "error", (seq, answer)

            os.kill(ctl_a.pid, signal.SIGKILL)  # A dies: B alone from now on
            await ctl_a.wait()
            before = b.servergroups.counters["broadcasts"]
            sent = await _broadcasts(peers, "after the kill", 10)
            assert b.servergroups.counters["broadcasts"] - before >= sent
            answer = await _status(peers["b1"], 10)
            assert {n: answer[n]["host"] for n in ("a1", "a2", "b1")} == {
                n: where[n] for n in ("a1", "a2", "b1")}
            assert answer[nova_member]["state"] == "error"
            await asyncio.get_running_loop().run_in_executor(
                None, _publish, url, topic, nova_member, hosts["b"], "active")
            for n in ("a1", "a2", "b1"):
                await peers[n].wait_for(lambda p: len(_notes(p)) == 2)
            await asyncio.sleep(0.5)
            for n in ("a1", "a2", "b1"):  # once each, in order, never twice
                states = [d["payload"]["state"] for d in _notes(peers[n])]
                assert states == ["error", "active"], (n, states)
            assert peers["bx"].app() == []

            # C starts now: before it is on the bus it has the groups and placement
            await bus_c.start()
            c = Controller(server_db, bus=bus_c, controller_id="ctl-c")
            await c.start()
            running.append(c)
            assert c.servergroups.groups.group("g1") is not None
            assert c.servergroups.groups.group("g2") is None
            assert _placed(c, where)
            await bus_c.serve_controller(c)
            await b.stop()  # C alone: it routes at once
            running.remove(b)
            await bus_b.stop()
            sent = await _broadcasts(peers, "through C", 5, settle=False)
            assert c.servergroups.counters["broadcasts"] == sent
    finally:
        await stop_processes(procs)
        for ctl in running:
            await ctl.stop()
        for bus in (bus_b, bus_c):
            await bus.stop()
        for p in peers.values():
            await p.close()
        if any(p.returncode not in (0, -15, -9) for p in procs):
            print(log.read_text()[-4000:])


async def _broadcasts(peers: dict[str, WirePeer], tag: str, n: int,
                      settle: bool = True) -> int:
    """`n` broadcasts from a1; each reaches a2 and b1 (once), nobody else."""
    for i in range(n):
        peers["a1"].broadcast(f"{tag} {i}")
        await asyncio.sleep(0.02)
    want = {f"{tag} {i}" for i in range(n)}
    for name in ("a2", "b1"):
        got = await peers[name].wait_for(
            lambda p: want <= {m["data"] for m in p.app("broadcast")} or None, timeout=20)
        assert got
        mine = [m["data"] for m in peers[name].app("broadcast") if m["data"] in want]
        assert sorted(mine) == sorted(want), (name, mine)  # none twice
    if settle:
        await asyncio.sleep(0.2)
    assert peers["a1"].app("broadcast") == [] and peers["bx"].app() == []
    return n


async def _status(peer: WirePeer, seq: int) -> dict[str, dict[str, Any]]:
    peer.status_query(seq)
    await peer.wait_for(lambda p: any(m["seq"] == seq for m in p.app("status_response_done")),
                        timeout=20)
    return {m["data"]["instance_name"] or m["data"]["instance_id"]: m["data"]
            for m in peer.app("status_response") if m["seq"] == seq}



async def test_a_reload_that_read_the_store_before_a_write_here_does_not_undo_it(
        server_db: str) -> None:
    """Another controller's signal makes this one reload the groups; a PUT
    here while that reload is between its read and its use waits for it,
    so the group is there when the PUT returns (not gone until the next
    fingerprint read)."""
    store = Store(server_db)

    async def db(fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    svc = ServerGroupService(None)
    await svc.start(store, db)
    read = store.list_server_groups

    def slow_read() -> Any:
        rows = read()
        time.sleep(0.3)  # the store answered; the answer is on its way
        return rows

    try:
        store.list_server_groups = slow_read  # type: ignore[method-assign]
        reload = asyncio.create_task(svc.sg_groups_changed(by="another-controller"))
        await asyncio.sleep(0.1)
        await svc.put_group("made-here", "", ["vm-1"])
        assert svc.groups.group("made-here") is not None
        await reload
        assert svc.groups.group("made-here") is not None
    finally:
        await svc.stop()
        store.close()


async def test_bad_messages_from_other_controllers_are_refused_and_tell_nobody() -> None:
    bus = CastRecorder()
    svc = ServerGroupService(bus)
    svc.groups.set_group("g", "", ["a", "b"])
    await svc.sg_instances("h1", ["a", "b"])
    bad = [dict(by="x", uuid=None, heartbeat="failed"), dict(by=None, uuid="a"),
           dict(by="x", uuid="a", heartbeat=7), dict(by="x", uuid="a", secret="y"),
           dict(by="x", uuid="n" * 300, heartbeat="failed"),
           dict(by="x", uuid="a", host="\udcff"), dict(by=["x"], uuid="a")]
    for kw in bad:
        answer = await svc.sg_member_changed(**kw)
        assert answer["ok"] is False and answer["error"], kw
    assert (await svc.sg_member_changed(by="x", uuid="a", heartbeat="failed"))["applied"]
    assert svc.groups.instance("a").heartbeat == "failed"
    # its own message, come back on the fanout, changes nothing
    assert not (await svc.sg_member_changed(by=svc.peer_id, uuid="a",
                                            heartbeat="enabled"))["applied"]
    assert svc.groups.instance("a").heartbeat == "failed"
    assert bus.casts == []  # recorded, told to no guest
    assert svc.counters["refused"] == len(bad)


VOTE_SCRIPT = """#!/bin/sh
# $1 = revocable|irrevocable, $2 = event type
case "$2" in
  live_migrate_begin) echo "busy" >&2; exit 1 ;;
esac
exit 0
"""


@pytest.mark.system
@pytest.mark.slow
async def test_a_vote_asked_through_either_controller_is_answered_to_it(
        sock_dir: Path, server_db: str) -> None:
    """Two controller processes on one PostgreSQL, a compute agent and a real
    guest agent: the guest's answer goes back to the controller whose REST
    API asked (not to the other, whose turn it may be on the shared queue),
    and still to B once A is killed."""
    url = require_rabbitmq()
    run = uuid.uuid4().hex[:8]
    instances = sock_dir / "i"
    instances.mkdir()
    ports = {"a": free_port(), "b": free_port()}
    confs = {}
    for role in ("a", "b", "compute"):
        confs[role] = sock_dir / f"{role}.conf"
        confs[role].write_text(
            f"[DEFAULT]\nhost = compute-{run}\ncontrol_exchange = nfvha-vote-{run}\n"
            f"controller_id = ctl-{role}\n"
            f"[bus]\ntransport_url = {url}\n[database]\nconnection = {server_db}\n"
            f"[api]\nport = {ports.get(role, 0)}\n"
            f"[heartbeat]\ninstances_dir = {instances}\nspool_dir =\n")
    script = sock_dir / "vote.sh"
    script.write_text(VOTE_SCRIPT)
    script.chmod(0o755)
    inst = str(uuid.uuid4())
    channel = PtyChannel(instances / f"cgcs.heartbeat.{inst}.sock", sock_dir / "vport")
    await channel.start()
    log = sock_dir / "services.log"
    procs = {role: await spawn_nfvha(role if role == "compute" else "controller",
                                     "--config-file", str(confs[role]), log=log)
             for role in ("a", "b", "compute")}
    guest = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.guest", "--device", str(sock_dir / "vport"),
        "--interval-ms", "200", "--event-script", str(script))
    rest = {r: httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=30)
            for r, p in ports.items()}
    try:
        async def enabled() -> bool:
            r = await rest["a"].get(f"/v1/instances/{inst}")
            return r.status_code == 200 and r.json()["heartbeat"]["state"] == "enabled"

        await poll(enabled, 60, "the guest enabled")
        await poll(lambda: rest["b"].get("/healthz"), 60, "controller B up")

        async def ask(via: str, action: str) -> tuple[str, float]:
            t0 = time.monotonic()
            r = await rest[via].post(f"/v1/instances/{inst}/actions", json={"action": action})
            assert r.status_code == 200, r.text
            return r.json()["result"], time.monotonic() - t0

        # several each: the compute's answers would go either way if not addressed
        for via in ("a", "b", "a", "b", "b", "a"):
            assert (await ask(via, "stop"))[0] == "accept", via
            assert (await ask(via, "live_migrate_begin"))[0] == "reject", via
        os.kill(procs["a"].pid, signal.SIGKILL)
        await procs["a"].wait()
        result, took = await ask("b", "live_migrate_begin")
        assert result == "reject"
        assert took < 5  # the guest's answer, not B's wait for one running out (13 s)
    finally:
        for client in rest.values():
            await client.aclose()
        if guest.returncode is None:
            guest.terminate()
            await guest.wait()
        await stop_processes(list(procs.values()))
        await channel.close()
