"""A Nova operation that stops, freezes or moves a VM on purpose (delete,
stop, reboot, pause, live migration, ...) closes its heartbeat channel or
silences its guest: that fault is stored with its deliveries `suppressed`
and the reason, and no sink hears of it. A fault nothing explains is
reported as before; without Nova notifications nothing waits."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, poll, require_rabbitmq, services_conf

from nfvha.controller import nova_notifications as nn
from nfvha.controller.planned import PlannedOps
from nfvha.controller.service import Controller
from nfvha.demo.qemu_pty import PtyChannel
from nfvha.demo.webhook_sink import WebhookSink
from nfvha.verify.deploy.procfs import stop_all


def versioned(event_type: str, uuid_: str, state: str = "active",
              task_state: str | None = None, host: str = "cmp-1") -> dict[str, Any]:
    return {"event_type": event_type, "priority": "INFO", "publisher_id": f"nova-compute:{host}",
            "timestamp": "2026-11-24 09:00:00.000000",
            "payload": {"nova_object.name": "InstanceActionPayload", "nova_object.data": {
                "uuid": uuid_, "host": host, "state": state, "task_state": task_state,
                "power_state": "running"}}}


def legacy(event_type: str, uuid_: str, **payload: Any) -> dict[str, Any]:
    return {"event_type": event_type, "priority": "INFO", "publisher_id": "compute.cmp-1",
            "payload": {"instance_id": uuid_, "host": "cmp-1", **payload}}


def change(msg: dict[str, Any]) -> nn.InstanceChange:
    c = nn.from_message(msg)
    assert c is not None
    return c


# --- the bookkeeping --------------------------------------------------------------------
def test_an_operation_explains_faults_from_start_until_it_lingered_out() -> None:
    p = PlannedOps(linger_s=5)
    assert p.explains("u1", 0) is None
    p.observe(change(versioned("instance.live_migration_pre.start", "u1")), 1.0)
    assert p.explains("u1", 2.0) == "Nova operation live_migration_pre in progress"
    p.observe(change(versioned("instance.live_migration_pre.end", "u1")), 3.0)
    assert "ended" in p.explains("u1", 7.9)
    assert p.explains("u1", 8.1) is None
    assert p.explains("u2", 2.0) is None          # only that instance


def test_task_state_and_vm_state_explain_too() -> None:
    p = PlannedOps(linger_s=0)
    p.observe(change(versioned("instance.update", "u1", task_state="deleting")), 0)
    assert p.explains("u1", 1) == "Nova task_state deleting"
    p.observe(change(legacy("compute.instance.update", "u2", state="paused",
                            old_state="active", new_task_state=None)), 0)
    assert p.explains("u2", 1) == "Nova vm_state paused"
    # the task is over and the VM runs again: a fault now is a fault
    p.observe(change(versioned("instance.update", "u1", task_state=None)), 2)
    assert p.explains("u1", 3) is None
    p.observe(change(legacy("compute.instance.update", "u2", state="active",
                            old_state="paused", new_task_state=None)), 2)
    assert p.explains("u2", 3) is None


def test_harmless_operations_explain_nothing() -> None:
    p = PlannedOps()
    for ev in ("instance.create.start", "instance.power_on.start", "instance.snapshot.start",
               "instance.volume_attach.start", "instance.exists", "instance.create.end"):
        p.observe(change(versioned(ev, "u1")), 0)
        assert p.explains("u1", 0.1) is None, ev
    p.observe(change(legacy("compute.instance.delete.start", "u1", state="active")), 0)
    assert p.explains("u1", 0.1) == "Nova operation delete in progress"


def test_memory_is_bounded() -> None:
    p = PlannedOps(max_instances=3)
    for i in range(10):
        p.observe(change(versioned("instance.pause.start", f"u{i}")), 0)
    assert len(p) == 3 and p.explains("u9", 0) and p.explains("u0", 0) is None


# --- one controller -------------------------------------------------------------------------
class Sink:
    name = "sink"

    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, Any]]] = []

    async def deliver(self, event: dict[str, Any]) -> None:
        self.got.append((time.monotonic(), event))


def fault(uuid_: str, kind: str = "channel_lost") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "instance_uuid": uuid_, "host": "cmp-1", "kind": kind,
            "corrective_action": "reboot", "detail": "heartbeat channel closed",
            "detected_at": "2026-11-24T09:00:00.000000+00:00"}


async def test_controller_suppresses_explained_faults_and_reports_the_rest(
        tmp_path: Path) -> None:
    sink = Sink()
    # a grace far above the time a delivery takes, so that a loaded machine
    # cannot blur "held" and "not held"
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [sink], planned_grace_s=1.0,
                   planned_linger_s=0.3)
    await c.start()
    try:
        # no Nova notification yet: nothing waits
        t0 = time.monotonic()
        await c.fault(fault("plain"))
        await c.wait_idle(5)
        assert sink.got[-1][0] - t0 < 0.5

        migrating, other, late = "u-migrating", "u-other", "u-late"
        await c.on_nova_notification(versioned("instance.update", migrating,
                                               task_state="migrating"))
        ev = await c.fault(fault(migrating))
        t1 = time.monotonic()
        await c.fault(fault(other, "heartbeat_loss"))
        # the notification of a pause arrives after the fault it causes
        ev_late = await c.fault(fault(late, "heartbeat_loss"))
        await asyncio.sleep(0.1)
        await c.on_nova_notification(versioned("instance.pause.start", late))
        await c.wait_idle(5)

        told = [e["instance_uuid"] for _t, e in sink.got]
        assert told == ["plain", other]
        assert sink.got[-1][0] - t1 >= 0.99          # held for the grace
        for event_id, why in ((ev["id"], "task_state migrating"),
                              (ev_late["id"], "operation pause in progress")):
            stored = await c.get_event(event_id)
            [d] = stored["deliveries"]
            assert d["status"] == "suppressed" and why in d["note"], d
        assert c.metrics.suppressed.labels("sink")._value.get() == 2

        # the operation is over (and lingered out): the next fault is reported
        await c.on_nova_notification(versioned("instance.pause.end", late, state="active"))
        await c.on_nova_notification(versioned("instance.unpause.end", late, state="active"))
        await asyncio.sleep(0.35)
        await c.fault(fault(late, "heartbeat_loss"))
        await c.wait_idle(5)
        assert [e["instance_uuid"] for _t, e in sink.got][-1] == late
    finally:
        await c.stop()


async def test_junk_notifications_are_counted_not_fatal(tmp_path: Path) -> None:
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await c.start()
    try:
        for junk in ({}, {"event_type": "instance.delete.start", "payload": 5},
                     {"event_type": 7, "payload": {}},
                     {"event_type": "compute.instance.delete.start", "payload": {}}):
            await c.on_nova_notification(junk)
        assert c.servergroups.counters["refused"] == 4
        assert len(c.planned) == 0
    finally:
        await c.stop()


# --- processes over RabbitMQ, a real guest agent, Nova's own notifier --------------------------
# Nova's own notifier (oslo.messaging, messagingv2, exchange nova), in a
# process of its own: set-up blocks, and this test's event loop relays the
# guests' channels (a stalled relay is a heartbeat_loss)
PUBLISH = r"""
import json, sys
import oslo_messaging
from oslo_config import cfg

url, topic, event_type, payload = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cfg.CONF([], project="nova-test")
oslo_messaging.get_notification_transport(cfg.CONF, url=url).cleanup()
cfg.CONF.set_override("control_exchange", "nova")
transport = oslo_messaging.get_notification_transport(cfg.CONF, url=url)
notifier = oslo_messaging.Notifier(transport, publisher_id="nova-compute:cmp-1",
                                   driver="messagingv2", topics=[topic])
notifier.info({}, event_type, json.loads(payload))
transport.cleanup()
"""


async def _publish(url: str, topic: str, event_type: str, payload: dict[str, Any]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISH, url, topic, event_type, json.dumps(payload),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.mark.system
async def test_a_deleted_vm_raises_no_alarm_a_crashed_one_does(sock_dir: Path) -> None:
    url = require_rabbitmq()
    run = uuid.uuid4().hex[:8]
    port = free_port()
    topic = f"nfvha_planned_{run}"
    sink = WebhookSink()
    await sink.start()
    instances = sock_dir / "i"
    instances.mkdir()
    # a long grace: a loaded CI machine may be slow to hand the listener its
    # notification, and this test is about the outcome, not the timing
    conf = services_conf(
        sock_dir / "n.conf", url=url, run=run, port=port, instances=instances,
        db=sock_dir / "n.sqlite", heartbeat="planned_grace_ms = 2000\n",
        extra=f"[reporters]\nenabled = webhook\n[webhook]\nurl = {sink.url}\n"
              f"[nova]\nnotifications = true\nnotification_topics = {topic}\n"
              f"notification_pool = nfvha-test-{run}\n")
    vms = {name: str(uuid.uuid4()) for name in ("deleted", "crashed")}
    channels, guests = {}, []
    log = open(sock_dir / "services.log", "ab")  # noqa: SIM115
    procs = [subprocess.Popen([sys.executable, "-m", "nfvha.cli.main", role, "--config-file",
                               str(conf)], stdout=log, stderr=log)
             for role in ("controller", "compute")]
    api = f"http://127.0.0.1:{port}"
    try:
        for name, inst in vms.items():
            channels[name] = PtyChannel(instances / f"cgcs.heartbeat.{inst}.sock",
                                        sock_dir / f"vport-{name}")
            await channels[name].start()
            guests.append(subprocess.Popen(
                [sys.executable, "-m", "nfvha.guest", "--device", str(sock_dir / f"vport-{name}"),
                 "--interval-ms", "200"], stdout=log, stderr=log))
        async with httpx.AsyncClient(base_url=api, timeout=10) as http:
            async def enabled() -> bool:
                r = await http.get("/v1/instances")
                states = {i["uuid"]: i["heartbeat"]["state"] for i in r.json()}
                return all(states.get(u) == "enabled" for u in vms.values())

            await poll(enabled, 60, "both guests enabled")
            # Nova deletes one: its compute says so, then destroys the domain
            await _publish(url, topic, "instance.delete.start", {
                "nova_object.name": "InstanceActionPayload", "nova_object.namespace": "nova",
                "nova_object.version": "1.8", "nova_object.data": {
                    "uuid": vms["deleted"], "host": f"compute-{run}", "state": "active",
                    "task_state": "deleting", "power_state": "running"}})
            await asyncio.sleep(0.5)   # the listener has it (normally well under this)
            t0 = time.monotonic()
            await channels["deleted"].close()
            await channels["crashed"].close()   # the other just dies: no notification

            crash = await sink.wait_for(vms["crashed"], "channel_lost", t0, 20)
            assert crash is not None, "the crashed VM's channel_lost was not reported"

            async def deleted_event() -> dict[str, Any] | None:
                evs = [e for e in (await http.get("/v1/events")).json()
                       if e["instance_uuid"] == vms["deleted"]]
                return evs[0] if evs and evs[0]["deliveries"][0]["status"] != "pending" \
                    else None

            ev = await poll(deleted_event, 20, "the deleted VM's fault stored and settled")
            assert ev["kind"] == "channel_lost"
            [d] = ev["deliveries"]
            assert d["status"] == "suppressed" and "delete" in d["note"], d
            await asyncio.sleep(0.5)
            assert [r.body["instance_uuid"] for r in sink.received] == [vms["crashed"]]
    finally:
        for g in guests:
            g.send_signal(signal.SIGTERM)
        stop_all([*guests, *procs], 20)
        for ch in channels.values():
            await ch.close()
        await sink.stop()
        log.close()


def test_an_ended_versioned_operation_clears_its_task_state() -> None:
    p = PlannedOps(linger_s=1)
    p.observe(change(versioned("instance.reboot.start", "u1", task_state="rebooting")), 0)
    p.observe(change(versioned("instance.reboot.end", "u1", task_state=None)), 1)
    assert p.explains("u1", 1.5) is not None          # lingering
    assert p.explains("u1", 3) is None                # over: a fault now is a fault


def test_stale_explanations_expire() -> None:
    p = PlannedOps(linger_s=0, max_op_s=60)
    p.observe(change(versioned("instance.live_migration_pre.start", "u1",
                               task_state="migrating")), 0)
    assert p.explains("u1", 59) is not None
    assert p.explains("u1", 61) is None               # its end was never heard
    p.observe(change(legacy("compute.instance.update", "u2", state="stopped",
                            new_task_state=None)), 0)
    assert p.explains("u2", 1) == "Nova vm_state stopped"
    p.running("u2")                                   # yet the guest heartbeats
    assert p.explains("u2", 2) is None
    p.observe(change(versioned("instance.pause.start", "u3")), 0)
    p.running("u3")                                   # an operation still going on
    assert p.explains("u3", 1) is not None


async def test_a_guest_heartbeating_again_outdates_a_down_vm_state(tmp_path: Path) -> None:
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await c.start()
    try:
        await c.on_nova_notification(legacy("compute.instance.update", "u1", state="paused",
                                            new_task_state=None))
        assert c.planned.explains("u1", time.monotonic()) == "Nova vm_state paused"
        assert (await c.instance_state("cmp-1", "u1", "enabled", "healthy", 200))["ok"]
        assert c.planned.explains("u1", time.monotonic()) is None
    finally:
        await c.stop()


async def test_every_controller_listens_for_operations_in_a_pool_of_its_own(
        tmp_path: Path) -> None:
    """Controllers share the server-group pool (peers are told once) but each
    needs every operation: any of them may deliver the fault it explains."""
    from oslo_config import cfg

    from nfvha.cli.services import Stack, start_servergroup_sources
    from nfvha.conf import register

    class RecordingBus:  # only what start_servergroup_sources asks of a bus
        def __init__(self) -> None:
            self.listens: list[tuple[str, Any]] = []

        async def listen_notifications(self, exchange: str, topics: list[str], callback: Any,
                                       pool: str) -> None:
            self.listens.append((pool, callback))

    conf = cfg.ConfigOpts()
    register(conf)
    conf([], project="nfvha-test")
    conf.set_override("notifications", True, group="nova")
    stacks = []
    for cid in ("ctl-a", "ctl-b"):
        stack = Stack()
        stack.bus = RecordingBus()
        stack.controller = Controller(f"sqlite:///{tmp_path / cid}.db", [], controller_id=cid)
        await start_servergroup_sources(conf, stack)
        stacks.append(stack)
    pools = [[pool for pool, _cb in s.bus.listens] for s in stacks]
    assert pools == [["nfvha", "nfvha-planned-ctl-a"], ["nfvha", "nfvha-planned-ctl-b"]]
    for s in stacks:
        assert s.bus.listens[1][1] == s.controller.on_nova_operation
        assert s.controller.planned_active
