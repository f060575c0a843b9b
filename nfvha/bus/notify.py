"""Publish OpenStack notifications in oslo.messaging's messagingv2 envelope
(``{"oslo.version": "2.0", "oslo.message": "<JSON text>"}``), on any exchange:
what Doctor's "shortcut" sends so that Ceilometer → Aodh event alarms fire
without waiting for Nova.

Why not oslo's own Notifier: its exchange is the process-wide
``control_exchange`` taken when the transport is made (Nova sets it to
``nova``); overriding that global in a running controller would move our
bus as well. The envelope is small and documented, so we write it with
the AMQP client the bus already has.

The exchange is looked up passively first: on a real cloud Nova declared
it already, perhaps durable (``amqp_durable_queues``), and a declaration
with other flags would be refused. Only if it does not exist is it
declared the way oslo declares it by default (topic, non-durable).
"""
from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")


def envelope(event_type: str, payload: dict[str, Any], publisher_id: str,
             priority: str = "info", message_id: str | None = None,
             now: datetime | None = None) -> dict[str, Any]:
    """The body oslo.messaging's messagingv2 driver puts on the wire."""
    stamp = (now or datetime.now(timezone.utc)).replace(tzinfo=None)
    message = {"message_id": message_id or str(uuid.uuid4()), "publisher_id": publisher_id,
               "event_type": event_type, "priority": priority.upper(), "payload": payload,
               "timestamp": stamp.strftime("%Y-%m-%d %H:%M:%S.%f")}
    return {"oslo.version": "2.0", "oslo.message": json.dumps(message)}


class NotificationPublisher:
    def __init__(self, urls: Sequence[str], *, ssl_context: ssl.SSLContext | None = None,
                 timeout_s: float = 5.0) -> None:
        self._urls = list(urls)
        self._ssl = ssl_context
        self._timeout = timeout_s
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._lock = asyncio.Lock()

    async def _connect(self) -> AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        await self.close()
        last: Exception | None = None
        for url in self._urls:  # the first broker that answers
            try:
                self._conn = await aio_pika.connect(url, ssl_context=self._ssl,
                                                    timeout=self._timeout)
                self._channel = await self._conn.channel()  # with publisher confirms
                return self._channel
            except Exception as exc:
                last = exc
        raise ConnectionError(f"no broker reachable: {last}")

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is not None and self._channel is not None and not self._channel.is_closed:
            return exchange
        channel = await self._connect()
        try:
            exchange = await channel.get_exchange(name, ensure=True)
        except aio_pika.exceptions.ChannelClosed:
            # 404: nobody declared it yet; the failed lookup closed the channel
            channel = await self._conn.channel() if self._conn else await self._connect()
            self._channel = channel
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC,
                                                      durable=False)
        self._exchanges[name] = exchange
        return exchange

    async def publish(self, exchange: str, topic: str, event_type: str,
                      payload: dict[str, Any], publisher_id: str,
                      priority: str = "info", message_id: str | None = None) -> str:
        """Publishes one notification (routing key ``<topic>.<priority>``) and
        returns its message_id once the broker confirmed it."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        body = envelope(event_type, payload, publisher_id, priority, message_id)
        async with self._lock:
            try:
                ex = await self._exchange(exchange)
                await asyncio.wait_for(ex.publish(
                    aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                     content_encoding="utf-8"),
                    routing_key=f"{topic}.{priority}"), self._timeout)
            except BaseException:
                await self.close()  # start clean next time
                raise
        return json.loads(body["oslo.message"])["message_id"]

    async def close(self) -> None:
        conn, self._conn, self._channel, self._exchanges = self._conn, None, None, {}
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # already gone
                pass
