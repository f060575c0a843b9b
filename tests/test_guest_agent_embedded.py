"""An application embeds the agent: Agent + register_health_check, in its own event loop."""
from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from typing import Any, Iterator

import pytest
from conftest import require_command
from test_guest_agent_process import TestHost

import nfvha.guest.agent as agent_mod
from nfvha.guest import Agent, register_health_check
from nfvha.protocol.host import Fault, HostConfig, RoundTrip, StateChanged


@pytest.fixture
def channel() -> Iterator[Any]:
    require_command("socat")
    d = tempfile.mkdtemp(prefix="nfvha-ge-")
    sock, dev = os.path.join(d, "hb.sock"), os.path.join(d, "vport")
    proc = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock},unlink-early",
                             f"PTY,link={dev},raw,echo=0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield sock, dev
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


async def _wait(host: TestHost, pred: Any, timeout: float, after: float = 0.0) -> Any:
    # TestHost.wait_for blocks; poll it from the loop so the agent keeps running.
    end = time.monotonic() + timeout
    while True:
        try:
            return host.wait_for(pred, 0.01, after=after)
        except AssertionError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.02)


async def test_registered_callable_drives_health_and_stop_sends_exit(channel: Any,
                                                                     monkeypatch: Any) -> None:
    monkeypatch.setattr(agent_mod, "_GLOBAL_CHECKS", [])
    sock, dev = channel
    state = {"ok": True}
    register_health_check(lambda: (state["ok"], "queue backlog too long"), name="queue",
                          period_ms=50)
    agent = Agent(dev, name="embedded", interval_ms=100, corrective_action="log")
    run = asyncio.ensure_future(agent.run())
    host = await asyncio.get_running_loop().run_in_executor(
        None, lambda: TestHost(sock, HostConfig(failure_threshold=6)))
    try:
        await _wait(host, lambda o: isinstance(o, StateChanged) and o.health == "healthy", 15)
        assert agent.registered
        state["ok"] = False
        t_fault, fault = await _wait(host, lambda o: isinstance(o, Fault), 5)
        assert (fault.kind, fault.corrective_action, fault.detail) == (
            "unhealthy", "log", "queue backlog too long")
        state["ok"] = True
        await _wait(host, lambda o: isinstance(o, StateChanged) and o.health == "healthy", 5,
                    after=t_fault)
        agent.stop()
        assert await asyncio.wait_for(run, 5) == 0
        await _wait(host, lambda o: isinstance(o, StateChanged) and o.state == "disabled", 5)
        assert host.count(Fault) == 1 and host.count(RoundTrip) >= 3  # healthy, sick, healthy
    finally:
        if not run.done():
            agent.stop()
            await asyncio.wait_for(run, 5)
        host.close()


async def test_agent_without_device_retries_without_busy_loop_and_stops(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(agent_mod, "_GLOBAL_CHECKS", [])
    agent = Agent("/nonexistent/vport", interval_ms=100, reopen_min_s=0.05, reopen_max_s=0.2)
    opens = []
    real_open = agent_mod.open_device

    def counting_open(path: str) -> int:
        opens.append(time.monotonic())
        return real_open(path)

    monkeypatch.setattr(agent_mod, "open_device", counting_open)
    cpu0 = time.process_time()
    run = asyncio.ensure_future(agent.run())
    await asyncio.sleep(1.0)
    agent.stop()
    assert await asyncio.wait_for(run, 2) == 0
    assert 3 <= len(opens) <= 15  # backoff 0.05 -> 0.2 s, not a spin
    assert time.process_time() - cpu0 < 0.5


def test_agent_refuses_bad_settings() -> None:
    with pytest.raises(ValueError):
        Agent("/dev/null", corrective_action="explode")
    with pytest.raises(ValueError):
        Agent("/dev/null", probes=["nonsense"])
