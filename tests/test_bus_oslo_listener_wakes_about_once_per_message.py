"""oslo.messaging's RPC servers wait for the next message in steps of at
least 50 ms (nfvha/bus/oslo_rpc.py), not 1, 2, 4, ... ms after every
message: casts a few ms apart cost the controller's RPC server about one
wake-up each, and every one still arrives, in order. (Notification
listeners keep oslo's steps: their acks wait for them;
tests/test_servergroup_shared_between_controllers.py kills a controller
right after it handled one.)"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from conftest import require_rabbitmq, until
from oslo_messaging._drivers import impl_rabbit

from nfvha.bus import make_bus

pytestmark = pytest.mark.system

CASTS = 40


class Heard:
    controller_id = "ctl-polls"

    def __init__(self) -> None:
        self.got: list[int] = []

    def sg_broadcast(self, n: int) -> None:
        self.got.append(n)


async def test_casts_10_ms_apart_cost_the_listener_about_one_poll_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = require_rabbitmq()
    polls = 0
    consume = impl_rabbit.Connection.consume

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal polls
        polls += 1
        return consume(self, *args, **kwargs)

    monkeypatch.setattr(impl_rabbit.Connection, "consume", counted)
    prefix = f"nfvha-polls-{uuid.uuid4().hex[:8]}"
    ctl_bus, agent_bus = make_bus(url, prefix=prefix), make_bus(url, prefix=prefix)
    heard = Heard()
    await ctl_bus.start()
    await agent_bus.start()
    try:
        await ctl_bus.serve_controller(heard)
        await asyncio.sleep(0.5)  # the listener is idle, polling in long steps
        before = polls
        for n in range(CASTS):
            await agent_bus.cast_controller("sg_broadcast", n=n)
            await asyncio.sleep(0.01)
        await until(lambda: len(heard.got) == CASTS, 20)
        spent = polls - before
    finally:
        await agent_bus.stop()
        await ctl_bus.stop()
    print(f"\n{spent} polls of the listener for {CASTS} casts")
    assert heard.got == list(range(CASTS))
    # 1, 2, 4 ms steps: three empty polls or more in every 10 ms gap, four a cast
    assert spent < 2 * CASTS, f"{spent} polls for {CASTS} casts"
