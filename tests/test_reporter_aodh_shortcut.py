"""The Aodh sink (Doctor's shortcut) on the real RabbitMQ: the notification
arrives, in Nova's envelope, where Ceilometer listens (oslo.messaging's own
notification listener reads it here), with the project looked up in Nova
(its stand-in) once per instance; an exchange Nova declared durable is used
as it is; a broker that is away is a Retry, Nova not knowing the instance
is not.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from conftest import require_rabbitmq
from test_reporter_wire_json import EVENT

from nfvha.bus.amqp_connect import amqp_urls
from nfvha.bus.notify import NotificationPublisher, envelope
from nfvha.bus.oslo_rpc import OsloBus
from nfvha.controller import nova_notifications as nn
from nfvha.controller.reporters import Retry, build
from nfvha.controller.reporters._openstack import ProjectLookup, connect
from nfvha.controller.reporters.aodh import AodhShortcutReporter
from nfvha.standins.nova import NovaStandin


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    """A notification exchange of this test's own (stands for ``nova``)."""
    url = require_rabbitmq()
    name = f"nfvhatest-nova-{uuid.uuid4().hex[:8]}"
    yield name
    conn = await aio_pika.connect(amqp_urls(url)[0])
    async with conn:
        ch = await conn.channel()
        with contextlib.suppress(Exception):
            await ch.exchange_delete(name)


async def listen(exchange: str) -> tuple[OsloBus, asyncio.Queue[dict[str, Any]]]:
    """What Ceilometer does: an oslo.messaging notification listener."""
    bus = OsloBus(require_rabbitmq())
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await bus.listen_notifications(exchange, ["notifications"], got.put_nowait,
                                   pool=f"{exchange}-ceilometer")
    return bus, got


def nova_conn(url: str) -> Any:
    return connect(auth_type="none", auth={"endpoint": url},
                   compute_endpoint_override=url + "/v2.1")


async def test_the_notification_reaches_a_ceilometer_style_listener_with_the_project(
        exchange: str) -> None:
    url = require_rabbitmq()
    bus, got = await listen(exchange)
    async with NovaStandin(projects={EVENT["instance_uuid"]: "proj-42"}) as nova:
        lookup = ProjectLookup(lambda: nova_conn(nova.url))
        rep = AodhShortcutReporter(NotificationPublisher(amqp_urls(url)), exchange=exchange,
                                   project_of=lookup)
        try:
            assert await rep.deliver(dict(EVENT)) is None
            assert await rep.deliver(dict(EVENT)) is None  # a redelivery: same message id
            notes = [await asyncio.wait_for(got.get(), 10) for _ in range(2)]
            assert nova.shown == 1  # the project is looked up once per instance
        finally:
            await rep.aclose()
            await bus.stop()
    note = notes[0]
    assert note["priority"] == "info"
    assert note["event_type"] == "compute.instance.update"
    assert note["publisher_id"] == "nfvha.compute-7"
    assert note["message_id"] == EVENT["id"] == notes[1]["message_id"]
    assert note["payload"] == {
        "tenant_id": "proj-42", "instance_id": EVENT["instance_uuid"], "state": "error",
        "old_state": None, "host": "compute-7", "state_description": "nfvha: heartbeat_loss",
        "nfvha_event_id": EVENT["id"], "nfvha_cause": "heartbeat_loss"}


async def test_envelope_is_what_nova_notifications_parse_expects() -> None:
    body = envelope("compute.instance.update", {"instance_id": "u1", "state": "error",
                                                "tenant_id": "p1", "host": "h"},
                    "nfvha.h", message_id="m-1")
    assert set(body) == {"oslo.version", "oslo.message"}
    inner = json.loads(body["oslo.message"])
    assert inner["timestamp"][4] == "-" and inner["timestamp"][10] == " "
    change = nn.parse(json.dumps(body).encode())
    assert (change.uuid, change.state, change.tenant_id) == ("u1", "error", "p1")


async def test_an_exchange_nova_declared_durable_is_used_as_it_is(exchange: str) -> None:
    url = require_rabbitmq()
    conn = await aio_pika.connect(amqp_urls(url)[0])
    try:
        ch = await conn.channel()
        ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue("", exclusive=True)
        await q.bind(ex, routing_key="notifications.info")
        rep = AodhShortcutReporter(NotificationPublisher(amqp_urls(url)), exchange=exchange)
        try:
            note = await rep.deliver(dict(EVENT))
        finally:
            await rep.aclose()
        assert note == "tenant_id not looked up ([aodh] cloud unset)"
        msg = await q.get(timeout=5)
        inner = json.loads(json.loads(msg.body)["oslo.message"])
        assert inner["payload"]["tenant_id"] is None and inner["message_id"] == EVENT["id"]
    finally:
        await conn.close()


async def test_unknown_instance_still_alarms_broker_away_is_retried(exchange: str) -> None:
    url = require_rabbitmq()
    bus, got = await listen(exchange)
    async with NovaStandin(servers=set()) as nova:  # Nova knows no server
        rep = AodhShortcutReporter(NotificationPublisher(amqp_urls(url)), exchange=exchange,
                                   project_of=ProjectLookup(lambda: nova_conn(nova.url)))
        try:
            note = await rep.deliver(dict(EVENT))
            assert note is not None and note.startswith("tenant_id unknown (HTTP 404")
            assert (await asyncio.wait_for(got.get(), 10))["payload"]["tenant_id"] is None
        finally:
            await rep.aclose()
            await bus.stop()
    away = AodhShortcutReporter(NotificationPublisher(
        ["amqp://guest:guest@127.0.0.1:1/%2F"], timeout_s=1), exchange=exchange)
    with pytest.raises(Retry, match="not published"):
        await away.deliver(dict(EVENT))
    await away.aclose()


def test_build_needs_rabbitmq_for_aodh() -> None:
    from oslo_config import cfg

    from nfvha import conf as nfvha_conf

    conf = cfg.ConfigOpts()
    nfvha_conf.register(conf)
    conf([], default_config_files=[])
    with pytest.raises(ValueError, match="RabbitMQ"):
        build(["aodh"], conf)
    conf.set_override("transport_url", "rabbit://guest:guest@127.0.0.1:5672/", group="bus")
    [rep] = build(["aodh"], conf)
    assert isinstance(rep, AodhShortcutReporter) and rep.project_of is None
    assert (rep.exchange, rep.topic) == ("nova", "notifications")
