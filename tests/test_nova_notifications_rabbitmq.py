"""Nova notifications published to the real RabbitMQ in Nova's envelope are parsed.

The publisher is oslo.messaging's own Notifier with the messagingv2 driver on
exchange ``nova`` (what nova-compute runs), so the envelope is the real one.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import kombu
import oslo_messaging
import pytest
from oslo_config import cfg

from nfvha.controller import nova_notifications as nn
from tests.conftest import require_rabbitmq

pytestmark = pytest.mark.system


def _publish(url: str, topic: str, event_type: str, payload: dict) -> None:
    # The driver takes its default exchange from control_exchange when the
    # transport is made; the first transport only registers the option.
    oslo_messaging.get_notification_transport(cfg.CONF, url=url).cleanup()
    cfg.CONF.set_override("control_exchange", "nova")
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=url)
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id="nova-compute:cmp-1", driver="messagingv2", topics=[topic]
        )
        notifier.info({}, event_type, payload)
    finally:
        cfg.CONF.clear_override("control_exchange")
        transport.cleanup()


def test_raw_amqp_body_from_nova_notifier_parses():
    url = require_rabbitmq()
    topic = "nfvha_test_" + uuid.uuid4().hex[:8]
    conn = kombu.Connection(url.replace("rabbit://", "amqp://"))
    exchange = kombu.Exchange("nova", type="topic", durable=False)
    queue = kombu.Queue(topic, exchange, routing_key=topic + ".info", auto_delete=True,
                        durable=False)
    bodies = []
    with conn:
        with conn.Consumer(queue, callbacks=[lambda body, m: (bodies.append(body), m.ack())],
                           accept=["json", "text/plain"]):
            payload = {"tenant_id": "t1", "instance_id": "u-raw", "host": "cmp-1",
                       "state": "error", "old_state": "active"}
            _publish(url, topic, "compute.instance.update", payload)
            for _ in range(50):
                if bodies:
                    break
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
    assert bodies, "notification did not arrive"
    body = bodies[0]
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    assert "oslo.message" in (raw if isinstance(raw, str) else raw.decode())
    ch = nn.parse(raw)
    assert (ch.uuid, ch.state, ch.old_state, ch.host, ch.priority) == (
        "u-raw", "error", "active", "cmp-1", "INFO")


async def test_bus_listener_note_parses():
    url = require_rabbitmq()
    from nfvha.bus.oslo_rpc import OsloBus

    topic = "nfvha_vtest_" + uuid.uuid4().hex[:8]
    bus = OsloBus(url)
    got: asyncio.Queue = asyncio.Queue()
    await bus.listen_notifications("nova", [topic], got.put_nowait,
                                   pool="nfvha-test-" + topic)
    try:
        payload = {"nova_object.name": "InstanceUpdatePayload", "nova_object.data": {
            "uuid": "u-vers", "host": "cmp-2", "state": "active", "task_state": None,
            "power_state": "running", "state_update": {"nova_object.data": {
                "old_state": "building", "state": "active", "old_task_state": "spawning",
                "new_task_state": None}}}}
        await asyncio.get_running_loop().run_in_executor(
            None, _publish, url, topic, "instance.update", payload)
        note = await asyncio.wait_for(got.get(), 15)
    finally:
        await bus.stop()
    ch = nn.from_message(note)
    assert (ch.uuid, ch.host, ch.state, ch.old_state, ch.power_state) == (
        "u-vers", "cmp-2", "active", "building", "running")
    assert ch.timestamp and ch.priority == "INFO"
