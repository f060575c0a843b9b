"""A peer on the bus reaches only what a service lists as its BUS_METHODS:
the controller's stop() or REST queries are not callable by a compute (or
anything else holding the broker's credentials), on either bus."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import require_rabbitmq

from nfvha.bus import BusError, make_bus
from nfvha.bus.endpoint import bus_method
from nfvha.controller.service import Controller


def test_only_listed_public_methods_resolve() -> None:
    class Service:
        BUS_METHODS = frozenset({"hello", "_secret", "missing"})

        def hello(self) -> str:
            return "hi"

        def stop(self) -> None: ...

        def _secret(self) -> None: ...

    s = Service()
    assert bus_method(s, "hello")() == "hi"
    for name in ("stop", "_secret", "missing", "", None, 7, "__class__"):
        assert bus_method(s, name) is None


@pytest.mark.parametrize("url", ["inproc://", "rabbit"])
async def test_a_peer_cannot_stop_the_controller_or_read_its_store(url: str,
                                                                   tmp_path: Path) -> None:
    if url == "rabbit":
        url = require_rabbitmq()
    prefix = f"nfvhatest-{uuid.uuid4().hex[:8]}"
    bus = make_bus(url, prefix=prefix, call_timeout=5)
    await bus.start()
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], bus=bus)
    await c.start()
    try:
        await bus.serve_controller(c)
        for method, kwargs in (("stop", {}), ("list_instances", {}),
                               ("forget_host", {"host": "h"}), ("_db", {})):
            with pytest.raises(BusError):
                await bus.call_controller(method, **kwargs)
        assert c.started
        assert (await bus.call_controller("alive", host="h1"))["ok"] is True
    finally:
        await c.stop()
        await bus.stop()
