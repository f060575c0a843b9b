"""The compute agent serves Prometheus metrics on [compute] metrics_listen:
a real agent (start_stack, as `nfvha compute` builds it) with simulated
guests answers a real HTTP scrape with its sessions, guests by phase,
round-trip quantiles and process metrics, all with its host label; a blocked
or stopped loop makes the scrape say `nfvha_agent_up 0` instead of hanging;
an address it cannot listen on stops it at start, saying so; stopping the
agent closes the port."""
from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, until
from oslo_config import cfg
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nfvha import conf as nfvha_conf
from nfvha.bus import make_bus
from nfvha.cli.services import start_stack
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.metrics import registry_for
from nfvha.compute.simguest import Simulator

HOST = "cmp-metrics"


def _conf(metrics_listen: str) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    nfvha_conf.register(conf)
    conf([], default_config_files=[])
    conf.set_override("host", HOST)
    conf.set_override("spool_dir", "", "heartbeat")
    conf.set_override("metrics_listen", metrics_listen, "compute")
    return conf


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read().decode()


def _samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset({"host": HOST, **labels}.items()))]


async def test_scrape_shows_sessions_phases_round_trips_and_the_process(
        sock_dir: Path) -> None:
    sim = Simulator(sock_dir, 3, "normal", 100)
    uuids = await sim.start()
    port = free_port()
    stack = await start_stack(_conf(f"127.0.0.1:{port}"), controller=False, compute=True,
                              transport_url="inproc://", instances_dir=str(sock_dir))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        agent = stack.compute
        await until(lambda: len(agent.sessions) == 3 and all(
            s.state.phase == "enabled" and len(s.rtt_ms) >= 3
            for s in agent.sessions.values()), 30)
        m = _samples(await asyncio.to_thread(_get, url))

        assert _value(m, "nfvha_agent_up") == 1
        assert _value(m, "nfvha_agent_sessions") == 3
        assert _value(m, "nfvha_agent_connected") == 3
        assert _value(m, "nfvha_agent_guests", phase="enabled") == 3
        for phase in ("waiting", "disabled", "failed"):  # present at 0 from the start
            assert _value(m, "nfvha_agent_guests", phase=phase) == 0
        assert _value(m, "nfvha_agent_rtt_samples") >= 9
        rtt = [_value(m, "nfvha_agent_rtt_seconds", quantile=q)
               for q in ("0.5", "0.9", "0.99")]
        assert 0 < rtt[0] <= rtt[1] <= rtt[2] < 10
        assert _value(m, "nfvha_agent_faults_total") == 0
        assert _value(m, "nfvha_agent_faults_pending") == 0
        assert _value(m, "nfvha_agent_session_bytes_in") > 0
        # the process's own figures carry the host too
        assert _value(m, "process_cpu_seconds_total") > 0
        assert _value(m, "process_resident_memory_bytes") > 10e6
        assert _value(m, "process_open_fds") >= 3  # the guests' sockets at least

        # a guest that goes: counted as it goes
        await sim.close(uuids[0])
        await until(lambda: agent.sessions.get(uuids[0]) is None
                    or agent.sessions[uuids[0]].state.phase != "enabled", 30)
        m = _samples(await asyncio.to_thread(_get, url))
        assert _value(m, "nfvha_agent_guests", phase="enabled") == 2
    finally:
        await stack.stop()
        await sim.stop()
    with pytest.raises(urllib.error.URLError):  # stopping the agent closed the port
        await asyncio.to_thread(_get, url)


async def test_blocked_loop_scrapes_as_down_without_hanging(sock_dir: Path) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    agent = ComputeAgent(HOST, sock_dir, bus, report_interval_s=0, sync_interval_s=0)
    await agent.start()
    try:
        agent.serve_metrics("127.0.0.1:0")
        url = f"http://127.0.0.1:{agent.metrics.port}/metrics"
        # fetched from the loop's own thread: the loop is blocked for the
        # whole scrape, so the snapshot it is asked for never comes
        t0 = time.monotonic()
        m = _samples(_get(url))
        assert time.monotonic() - t0 < 50  # the scrape's own timeout (2 s), not urlopen's
        assert _value(m, "nfvha_agent_up") == 0
        assert ("nfvha_agent_sessions", frozenset({("host", HOST)})) not in m
        assert _value(m, "process_resident_memory_bytes") > 0
        # the loop free again: up
        m = _samples(await asyncio.to_thread(_get, url))
        assert _value(m, "nfvha_agent_up") == 1
        assert _value(m, "nfvha_agent_sessions") == 0
    finally:
        await agent.stop()
        await bus.stop()
    assert agent.metrics is None

    # a loop that is not running (never started, or stopped) and one closed
    idle = asyncio.new_event_loop()
    try:
        body = await asyncio.to_thread(
            generate_latest, registry_for(agent, idle, timeout_s=0.2))
        assert _value(_samples(body.decode()), "nfvha_agent_up") == 0
    finally:
        idle.close()
    body = await asyncio.to_thread(generate_latest, registry_for(agent, idle))
    assert _value(_samples(body.decode()), "nfvha_agent_up") == 0


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("listen, why", [
    ("8781", "is not host:port"),
    ("localhost:http", "is not host:port"),
    ("127.0.0.1:70000", "is not host:port"),
    ("192.0.2.1:8781", "cannot listen there"),  # TEST-NET-1: no address of this host
    ("busy", "cannot listen there"),
])
async def test_bad_metrics_listen_stops_the_agent_at_start(
        sock_dir: Path, busy_port: int, listen: str, why: str) -> None:
    if listen == "busy":
        listen = f"127.0.0.1:{busy_port}"
    with pytest.raises(SystemExit) as exc:
        await start_stack(_conf(listen), controller=False, compute=True,
                          transport_url="inproc://", instances_dir=str(sock_dir))
    msg = str(exc.value)
    assert msg.startswith("nfvha: [compute] metrics_listen: ")
    assert repr(listen) in msg and why in msg
