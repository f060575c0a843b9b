"""InProcBus keeps the bus contract: call returns the endpoint's result and
raises without a server; casts never block the caster and keep its order."""
from __future__ import annotations

import asyncio

import pytest

from nfvha.bus import NoServer, RemoteError, make_bus


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []
        self.release = asyncio.Event()

    async def fault(self, event: dict) -> dict:
        self.seen.append(("fault", event))
        return {"ok": True, "id": event["id"]}

    async def instance_state(self, **kwargs: object) -> None:
        await self.release.wait()  # a slow endpoint
        self.seen.append(("instance_state", dict(kwargs)))

    def sync_method(self, x: int) -> int:
        return x * 2

    async def broken(self) -> None:
        raise ValueError("endpoint failed")

    async def _private(self) -> str:
        return "secret"


async def test_call_returns_the_endpoint_result() -> None:
    bus = make_bus("inproc://")
    await bus.start()
    ep = Recorder()
    await bus.serve_controller(ep)
    event = {"id": "e1", "detail": ["x"]}
    assert await bus.call_controller("fault", event=event) == {"ok": True, "id": "e1"}
    assert await bus.call_controller("sync_method", x=21) == 42
    # the endpoint got a copy, as over the wire: the caller's object is its own
    event["detail"].append("mutated")
    assert ep.seen[0][1]["detail"] == ["x"]
    await bus.stop()


async def test_call_raises_without_server_and_for_endpoint_errors() -> None:
    bus = make_bus("inproc://")
    await bus.start()
    with pytest.raises(NoServer):
        await bus.call_controller("fault", event={"id": "x"})
    await bus.serve_controller(Recorder())
    with pytest.raises(RemoteError) as info:
        await bus.call_controller("broken")
    assert info.value.exc_type == "ValueError"
    with pytest.raises(NoServer):
        await bus.call_controller("no_such_method")
    with pytest.raises(NoServer):
        await bus.call_controller("_private")
    with pytest.raises(TypeError):  # not JSON: fails embedded as it would on RabbitMQ
        await bus.call_controller("fault", event={"id": object()})
    await bus.stop()


async def test_cast_does_not_wait_for_a_slow_endpoint_and_keeps_order() -> None:
    bus = make_bus("inproc://")
    await bus.start()
    ep = Recorder()
    await bus.serve_controller(ep)
    for i in range(5):
        # the endpoint blocks until released; the caster must not
        await asyncio.wait_for(bus.cast_controller("instance_state", n=i), 0.5)
    assert ep.seen == []
    ep.release.set()
    for _ in range(100):
        if len(ep.seen) == 5:
            break
        await asyncio.sleep(0.01)
    assert [kw["n"] for _, kw in ep.seen] == [0, 1, 2, 3, 4]
    await bus.stop()


async def test_cast_without_server_is_dropped_quietly() -> None:
    bus = make_bus("inproc://")
    await bus.start()
    await bus.cast_controller("instance_state", n=1)
    await bus.cast_compute("nohost", "x")
    await bus.fanout_compute("x")
    await bus.stop()


async def test_cast_compute_reaches_one_host_and_fanout_all() -> None:
    bus = make_bus("inproc://")
    await bus.start()
    got: dict[str, list] = {"a": [], "b": []}

    class Compute:
        def __init__(self, name: str) -> None:
            self.name = name

        async def ping(self, n: int) -> None:
            got[self.name].append(n)

    await bus.serve_compute("a", Compute("a"))
    await bus.serve_compute("b", Compute("b"))
    await bus.cast_compute("a", "ping", n=1)
    await bus.fanout_compute("ping", n=2)
    for _ in range(100):
        if len(got["a"]) == 2 and len(got["b"]) == 1:
            break
        await asyncio.sleep(0.01)
    assert got == {"a": [1, 2], "b": [2]}
    await bus.stop()


def test_make_bus_rejects_unknown_transports() -> None:
    with pytest.raises(ValueError):
        make_bus("fake://")


async def test_a_reply_reaches_the_controller_that_asked_by_its_id() -> None:
    class Named:
        def __init__(self, controller_id: str) -> None:
            self.controller_id = controller_id
            self.got: list[int] = []

        async def action_result(self, n: int) -> None:
            self.got.append(n)

    bus = make_bus("inproc://")
    await bus.start()
    a, b = Named("ctl-a"), Named("ctl-b")
    await bus.serve_controller(a)
    await bus.serve_controller(b)
    try:
        for n in range(6):
            await bus.reply_controller("ctl-b", "action_result", n=n)
        await bus.reply_controller("ctl-gone", "action_result", n=99)  # falls back to anyone
        for _ in range(100):
            if len(a.got) + len(b.got) == 7:
                break
            await asyncio.sleep(0.01)
        assert b.got[:6] == list(range(6)) and 99 in a.got + b.got and a.got in ([], [99])
    finally:
        await bus.stop()
