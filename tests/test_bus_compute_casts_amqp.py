"""Controller -> compute casts over nfvha's asyncio AMQP path (nfvha.bus.amqp_casts)
on the real RabbitMQ: order, routing, hostile bodies, a broker that is away
at start, a connection cut mid-run, and failover past a dead host.

The outage is a real TCP relay in front of RabbitMQ that the test opens and
cuts, so the broker every other test uses is never touched.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from conftest import require_rabbitmq, until

from nfvha.bus.amqp_casts import ComputeCasts
from nfvha.bus.amqp_connect import amqp_urls

pytestmark = pytest.mark.timeout(120)


class Relay:
    """A TCP relay to RabbitMQ: `cut()` drops every connection and refuses
    new ones until `open()`."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.links: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.links:
            w.transport.abort()
        self.links.clear()
        await self.server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", 5672)
        self.links += [writer, up_w]

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.transport.abort()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))


class Endpoint:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict]] = []

    async def deliver(self, **kwargs: object) -> None:
        self.got.append(("deliver", kwargs))

    def sync_deliver(self, **kwargs: object) -> None:
        self.got.append(("sync_deliver", kwargs))

    async def _private(self) -> None:
        self.got.append(("_private", {}))


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url = require_rabbitmq()
    name = f"nfvhatest-{uuid.uuid4().hex[:10]}"
    yield name
    conn = await aio_pika.connect(amqp_urls(url)[0])
    async with conn:
        for q in ("h1", "h2"):
            ch = await conn.channel()
            with contextlib.suppress(Exception):
                await ch.queue_delete(f"{name}-compute-casts.{q}")
        for ex in ("compute-casts", "compute-fanout"):
            ch = await conn.channel()
            with contextlib.suppress(Exception):
                await ch.exchange_delete(f"{name}-{ex}")


def url_via(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F?heartbeat=10"


async def test_casts_reach_their_host_in_order_and_the_fanout_reaches_all(prefix: str) -> None:
    urls = amqp_urls(require_rabbitmq())
    sender = ComputeCasts(urls, prefix)
    computes = {h: ComputeCasts(urls, prefix) for h in ("h1", "h2")}
    endpoints = {h: Endpoint() for h in computes}
    try:
        for h, c in computes.items():
            await c.start()
            await c.serve(h, endpoints[h])
        await sender.start()
        for i in range(300):
            sender.cast("h1", "deliver", {"i": i})
        sender.cast(None, "sync_deliver", {"all": True})
        await until(lambda: len(endpoints["h1"].got) == 301 and len(endpoints["h2"].got) == 1)
        assert [k["i"] for m, k in endpoints["h1"].got[:300]] == list(range(300))
        assert endpoints["h1"].got[300] == ("sync_deliver", {"all": True})
        assert endpoints["h2"].got == [("sync_deliver", {"all": True})]
    finally:
        for c in (sender, *computes.values()):
            await c.stop()


async def test_hostile_bodies_are_dropped_and_counted_and_delivery_goes_on(prefix: str) -> None:
    urls = amqp_urls(require_rabbitmq())
    compute = ComputeCasts(urls, prefix)
    endpoint = Endpoint()
    conn = await aio_pika.connect(urls[0])
    try:
        await compute.start()
        await compute.serve("h1", endpoint)
        ch = await conn.channel()
        ex = await ch.get_exchange(f"{prefix}-compute-casts")
        bad = [b"\xff\xfe not json", b"[]", b'{"method": 1, "args": {}}',
               b'{"method": "deliver", "args": []}', b'{"method": "nope", "args": {}}',
               b'{"method": "_private", "args": {}}', b'{"method": "deliver", "args": {"x": 1}',
               b"{" * 100_000, json.dumps({"method": "deliver", "args": {"n": 1}}).encode()]
        for body in bad:
            await ex.publish(aio_pika.Message(body), routing_key="h1")
        # a TypeError inside the endpoint (unexpected argument) is logged, not fatal
        await ex.publish(aio_pika.Message(b'{"method": "sync_deliver", "args": {}}'),
                         routing_key="h1")
        await until(lambda: len(endpoint.got) == 2)
        assert endpoint.got == [("deliver", {"n": 1}), ("sync_deliver", {})]
        assert compute.counters["bad"] == 8
        assert compute.counters["received"] == 10
    finally:
        await conn.close()
        await compute.stop()


async def test_broker_away_at_start_then_cut_mid_run_loses_no_buffered_cast(
        prefix: str) -> None:
    require_rabbitmq()
    relay = Relay()
    await relay.open()
    port = relay.port
    await relay.cut()  # the broker is "down" when both sides start
    sender = ComputeCasts([url_via(port)], prefix)
    compute = ComputeCasts([url_via(port)], prefix)
    endpoint = Endpoint()
    try:
        await sender.start()
        await compute.start()
        serving = asyncio.create_task(compute.serve("h1", endpoint, timeout=30))
        for i in range(5):
            sender.cast("h1", "deliver", {"i": i})  # buffered: nobody to send to
        await asyncio.sleep(0.5)
        assert not serving.done() and endpoint.got == []
        await relay.open()
        await asyncio.wait_for(serving, 20)
        await until(lambda: len(endpoint.got) == 5, timeout=20)
        # cut every connection mid-run: both sides reconnect and go on
        await relay.cut()
        await until(lambda: not sender._connected.is_set() and not compute._consuming.is_set())
        sender.cast("h1", "deliver", {"i": 5})
        await relay.open()
        await until(lambda: len(endpoint.got) == 6, timeout=20)
        assert [k["i"] for _, k in endpoint.got] == list(range(6))
        assert sender.counters["reconnects"] >= 1 and compute.counters["reconnects"] >= 1
    finally:
        await sender.stop()
        await compute.stop()
        with contextlib.suppress(Exception):
            await relay.cut()


async def test_a_dead_first_host_is_passed_over(prefix: str) -> None:
    real = amqp_urls(require_rabbitmq())[0]
    with_dead = [url_via(1), real]  # nothing listens on port 1
    sender, compute, endpoint = ComputeCasts(with_dead, prefix), ComputeCasts([real], prefix), \
        Endpoint()
    try:
        await compute.start()
        await compute.serve("h1", endpoint)
        await sender.start()
        assert await sender.wait_connected(15)
        sender.cast("h1", "deliver", {"ok": True})
        await until(lambda: endpoint.got == [("deliver", {"ok": True})])
    finally:
        await sender.stop()
        await compute.stop()


def test_oslo_transport_urls_become_amqp_urls_per_host() -> None:
    urls = amqp_urls("rabbit://u1:p%40ss@ctl1:5673,u2:pw@ctl2/nova")
    assert urls == ["amqp://u1:p%40ss@ctl1:5673/nova?heartbeat=10",
                    "amqp://u2:pw@ctl2:5672/nova?heartbeat=10"]
    assert amqp_urls("rabbit://guest:guest@127.0.0.1:5672/") == [
        "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=10"]
