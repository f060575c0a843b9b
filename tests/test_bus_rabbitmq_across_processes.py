"""OsloBus over the real RabbitMQ, with the controller in a separate process:
call round trip, cast, cast to one compute host, fanout, and a call made
while the controller is down that succeeds once it starts (caller retries).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from nfvha.bus import BusError, BusTimeout, RemoteError, make_bus
from tests.conftest import require_rabbitmq

# The controller process: serves the controller topic; `hello` makes it cast
# back to one compute host and fan out to all; it prints what it receives.
CONTROLLER = r"""
import asyncio, json, sys
from nfvha.bus import make_bus

async def main(url, prefix, casts):
    bus = make_bus(url, prefix=prefix, call_timeout=2, compute_casts=casts)
    await bus.start()

    class Controller:
        async def fault(self, event):
            print(json.dumps({"fault": event["id"]}), flush=True)
            return {"ok": True, "id": event["id"]}

        async def hello(self, host, instances, agent_started_at=None):
            print(json.dumps({"hello": host, "n": len(instances)}), flush=True)
            await bus.cast_compute(host, "welcome", to=host)
            await bus.fanout_compute("announce", sender="controller")

        async def broken(self):
            raise KeyError("missing")

    await bus.serve_controller(Controller())
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await bus.stop()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _delete_queues(url: str, prefix: str) -> None:
    import kombu

    names = [f"{prefix}-controller", f"{prefix}-compute"]
    names += [f"{prefix}-controller.{os.uname().nodename}"]
    names += [f"{prefix}-compute.{h}" for h in ("h1", "h2")]
    names += [f"{prefix}-compute-casts.{h}" for h in ("h0", "h1", "h2")]
    with kombu.Connection(url.replace("rabbit://", "amqp://")) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name)
            except Exception:
                channel = conn.channel()
        for exchange in (prefix, f"{prefix}-compute-casts", f"{prefix}-compute-fanout"):
            try:
                channel.exchange_delete(exchange)
            except Exception:
                channel = conn.channel()


@pytest.fixture
def rabbit() -> Iterator[tuple[str, str]]:
    url = require_rabbitmq()
    prefix = f"nfvhatest-{uuid.uuid4().hex[:10]}"
    yield url, prefix
    _delete_queues(url, prefix)


class ControllerProcess:
    def __init__(self, url: str, prefix: str, casts: str = "amqp") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTROLLER, url, prefix, casts], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

    async def line(self, timeout: float = 20) -> dict:
        assert self.proc.stdout is not None
        text = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        assert text, "controller process exited"
        return json.loads(text)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(params=["amqp", "oslo"])
def casts(request: pytest.FixtureRequest) -> str:
    """How controller -> compute casts travel ([bus] compute_casts)."""
    return request.param


@pytest.fixture
async def controller(rabbit: tuple[str, str], casts: str) -> AsyncIterator[ControllerProcess]:
    proc = ControllerProcess(*rabbit, casts=casts)
    try:
        assert await proc.line() == {"ready": True}
        yield proc
    finally:
        proc.close()


async def test_call_round_trip_and_cast(rabbit: tuple[str, str],
                                        controller: ControllerProcess) -> None:
    url, prefix = rabbit
    bus = make_bus(url, prefix=prefix, call_timeout=5)
    await bus.start()
    try:
        answer = await bus.call_controller("fault", event={"id": "ev-1", "kind": "x"})
        assert answer == {"ok": True, "id": "ev-1"}
        assert await controller.line() == {"fault": "ev-1"}
        with pytest.raises(RemoteError) as info:
            await bus.call_controller("broken")
        assert info.value.exc_type == "KeyError"
        # a cast returns before the controller has it
        t0 = time.monotonic()
        await bus.cast_controller("hello", host="h0", instances=[{"a": 1}, {"b": 2}])
        assert time.monotonic() - t0 < 0.5
        assert await controller.line() == {"hello": "h0", "n": 2}
    finally:
        await bus.stop()


async def test_cast_to_one_compute_and_fanout_to_all(rabbit: tuple[str, str], casts: str,
                                                      controller: ControllerProcess) -> None:
    url, prefix = rabbit
    got: dict[str, list[tuple[str, dict]]] = {"h1": [], "h2": []}
    both = asyncio.Event()

    class Compute:
        def __init__(self, host: str) -> None:
            self.host = host

        async def welcome(self, to: str) -> None:
            got[self.host].append(("welcome", {"to": to}))
            self._check()

        async def announce(self, sender: str) -> None:
            got[self.host].append(("announce", {"sender": sender}))
            self._check()

        def _check(self) -> None:
            if len(got["h1"]) == 2 and len(got["h2"]) == 1:
                both.set()

    buses = [make_bus(url, prefix=prefix, compute_casts=casts) for _ in range(2)]
    for bus, host in zip(buses, ("h1", "h2")):
        await bus.start()
        await bus.serve_compute(host, Compute(host))
    try:
        await buses[0].cast_controller("hello", host="h1", instances=[])
        await asyncio.wait_for(both.wait(), 20)
        assert sorted(got["h1"]) == [("announce", {"sender": "controller"}),
                                     ("welcome", {"to": "h1"})]
        assert got["h2"] == [("announce", {"sender": "controller"})]
    finally:
        for bus in buses:
            await bus.stop()


async def test_call_while_controller_down_succeeds_once_it_starts(
        rabbit: tuple[str, str]) -> None:
    url, prefix = rabbit
    bus = make_bus(url, prefix=prefix, call_timeout=1)
    await bus.start()
    proc: ControllerProcess | None = None
    failures: list[BusError] = []
    try:
        answer = None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                answer = await bus.call_controller("fault", event={"id": "ev-late"})
                break
            except BusError as exc:  # nobody serves yet: retry, start it after one miss
                failures.append(exc)
                if proc is None:
                    proc = ControllerProcess(url, prefix)
                await asyncio.sleep(0.2)
        assert answer == {"ok": True, "id": "ev-late"}
        assert failures and isinstance(failures[0], BusTimeout)
    finally:
        await bus.stop()
        if proc is not None:
            proc.close()


async def test_prefix_follows_control_exchange_when_not_given(
        rabbit: tuple[str, str]) -> None:
    import kombu
    from oslo_config import cfg

    url, prefix = rabbit
    bus = make_bus(url, call_timeout=5)
    cfg.CONF.set_override("control_exchange", prefix)  # what a config file would say
    try:
        await bus.start()

        class Echo:
            async def fault(self, event: dict) -> dict:
                return {"ok": True, "id": event["id"]}

        await bus.serve_controller(Echo())
        assert await bus.call_controller("fault", event={"id": "p"}) == {"ok": True, "id": "p"}
        with kombu.Connection(url.replace("rabbit://", "amqp://")) as conn:
            # passive declare: raises if the queue does not exist
            conn.channel().queue_declare(f"{prefix}-controller", passive=True)
    finally:
        await bus.stop()
        cfg.CONF.clear_override("control_exchange")
