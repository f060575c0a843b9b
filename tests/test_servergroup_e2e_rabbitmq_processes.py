"""Controller and two compute agents as separate processes over the real
RabbitMQ: a broadcast reaches the sender's peers on both computes and nobody
else; a Nova notification published in Nova's envelope (oslo Notifier,
messagingv2, exchange ``nova``) reaches the peers as a ``notification``.

The guests are raw StarlingX-wire peers (tests/servergroup_wire_peer.py)
playing QEMU's chardev sockets, so the bytes on the wire are checked exactly.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import oslo_messaging
import pytest
from conftest import require_rabbitmq, spawn_nfvha, stop_processes
from oslo_config import cfg
from servergroup_wire_peer import WirePeer

pytestmark = pytest.mark.system


def _publish(url: str, topic: str, event_type: str, payload: dict) -> None:
    # As nova-compute does: messagingv2 driver, control_exchange "nova".
    oslo_messaging.get_notification_transport(cfg.CONF, url=url).cleanup()
    cfg.CONF.set_override("control_exchange", "nova")
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=url)
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id="nova-compute:host-b", driver="messagingv2",
            topics=[topic])
        notifier.info({}, event_type, payload)
    finally:
        cfg.CONF.clear_override("control_exchange")
        transport.cleanup()


async def test_broadcast_and_nova_notification_cross_rabbitmq_between_processes(
        sock_dir: Path) -> None:
    url = require_rabbitmq()
    run = uuid.uuid4().hex[:8]
    topic = f"nfvha_sgtest_{run}"
    nova_uuid = str(uuid.uuid4())
    groups = sock_dir / "groups.json"
    groups.write_text(json.dumps([{"id": "g1", "name": "trio",
                                   "members": ["a1", "a2", "b1", nova_uuid]},
                                  {"id": "g2", "name": "alone", "members": ["bx"]}]))
    common = sock_dir / "common.conf"
    common.write_text(
        f"[DEFAULT]\ncontrol_exchange = nfvha-test-{run}\n"
        f"[bus]\ntransport_url = {url}\n"
        f"[database]\nconnection = sqlite:///{sock_dir / 'db.sqlite'}\n"
        f"[servergroup]\ngroups_file = {groups}\n"
        f"[nova]\nnotifications = true\n"
        f"notification_topics = {topic}\nnotification_pool = nfvha-test-{run}\n")
    peers: dict[str, WirePeer] = {}
    confs = {}
    for host, names in (("a", ["a1", "a2"]), ("b", ["b1", "bx"])):
        d = sock_dir / host
        d.mkdir()
        for n in names:
            peers[n] = WirePeer(d / f"cgcs.messaging.{n}.sock")
            await peers[n].start()
        confs[host] = sock_dir / f"{host}.conf"
        confs[host].write_text(f"[DEFAULT]\nhost = cmp-{host}-{run}\n"
                               f"[heartbeat]\ninstances_dir = {d}\n")
    log = sock_dir / "services.log"
    procs = [await spawn_nfvha("controller", "--config-file", str(common), "--api", "127.0.0.1:0",
                          log=log)]
    await asyncio.sleep(1.0)  # the controller's queues exist before the computes hello
    for host in ("a", "b"):
        procs.append(await spawn_nfvha("compute", "--config-file", str(common),
                                  "--config-file", str(confs[host]), log=log))
    try:
        for p in peers.values():
            await asyncio.wait_for(p.connected.wait(), 30)
        # Until the controller has placed every member, a broadcast may reach
        # only some; retry with fresh payloads until one reaches both peers.
        for attempt in range(60):
            peers["a1"].broadcast(f"hello {attempt}")
            await asyncio.sleep(0.5)
            if all(any(m["data"] == f"hello {attempt}" for m in peers[n].app("broadcast"))
                   for n in ("a2", "b1")):
                break
        else:
            raise AssertionError(f"broadcast never reached a2 and b1: "
                                 f"{peers['a2'].app()} {peers['b1'].app()}")
        for n in ("a2", "b1"):
            for m in peers[n].app("broadcast"):
                assert m["source_instance"] == "a1"
        # nobody else: not the sender, not the member of another group
        assert peers["a1"].app() == [] and peers["bx"].app() == []

        payload = {"nova_object.name": "InstanceUpdatePayload", "nova_object.version": "1.8",
                   "nova_object.namespace": "nova", "nova_object.data": {
                       "uuid": nova_uuid, "host": f"cmp-b-{run}", "state": "error",
                       "task_state": None, "power_state": "shutdown",
                       "display_name": "db-standby", "state_update": {
                           "nova_object.data": {"old_state": "active", "state": "error",
                                                "old_task_state": None,
                                                "new_task_state": None}}}}
        await asyncio.get_running_loop().run_in_executor(
            None, _publish, url, topic, "instance.update", payload)
        for n in ("a1", "a2", "b1"):
            (note,) = await peers[n].wait_for(lambda p: p.app("notification"), timeout=20)
            data = note["data"]
            assert data["event_type"] == "instance.update"
            assert data["payload"]["instance_id"] == nova_uuid
            assert (data["payload"]["state"], data["payload"]["old_state"]) == ("error",
                                                                                "active")
            assert data["payload"]["display_name"] == "db-standby"
        await asyncio.sleep(0.5)
        assert peers["bx"].app() == []
    finally:
        await stop_processes(procs)
        for peer in peers.values():
            await peer.close()
        if any(p.returncode not in (0, -15, -9) for p in procs):
            print(log.read_text()[-4000:])
