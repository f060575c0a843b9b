"""Healthy guests' cycles run on the C steady path (compute/steady.py), and
everything else still reaches the Python machine from there: a hang is
declared heartbeat_loss, an unhealthy answer becomes a fault, a recovered
guest goes back on the path. The same run with the path switched off gives
the same faults."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import StubController, missing, until
from oslo_config import cfg

from nfvha import conf as nfvha_conf
from nfvha.bus import make_bus
from nfvha.cli.services import start_stack
from nfvha.compute import steady
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.simguest import Simulator


@pytest.mark.parametrize("on", [True, False], ids=["c-path", "python-only"])
async def test_faults_leave_the_steady_path_and_recovery_returns_to_it(sock_dir: Path,
                                                                       on: bool) -> None:
    if on and not steady.AVAILABLE:
        missing("the C steady path is not built (pip install -e . with a C compiler)")
    bus = make_bus("inproc://")
    await bus.start()
    ctl = StubController()
    await bus.serve_controller(ctl)
    sim = Simulator(sock_dir, 3, "normal", 100)
    hung, sick, calm = await sim.start()
    agent = ComputeAgent("host-a", sock_dir, bus)
    agent.hooks.steady = on
    await agent.start()
    try:
        sessions = agent.sessions
        await until(lambda: len(sessions) == 3 and all(
            s.state.phase == "enabled" and len(s.rtt_ms) >= 5 for s in sessions.values()), 30)
        assert all(s.on_steady_path == on for s in sessions.values())
        answered = len(sessions[calm].rtt_ms)
        await until(lambda: len(sessions[calm].rtt_ms) >= answered + 5, 10)  # cycles go on

        sim.hang(hung, True)
        sim.set_health(sick, "unhealthy")
        await until(lambda: {(f["instance_uuid"], f["kind"]) for f in ctl.faults}
                    >= {(hung, "heartbeat_loss"), (sick, "unhealthy")}, 15)
        assert sessions[hung].state.phase == "failed"
        assert sessions[sick].state.health == "unhealthy"
        assert not sessions[hung].on_steady_path and not sessions[sick].on_steady_path

        sim.hang(hung, False)
        sim.set_health(sick, "healthy")
        await until(lambda: sessions[hung].state.phase == "enabled"
                    and sessions[sick].state.health == "healthy", 15)
        await until(lambda: all(s.on_steady_path == on for s in sessions.values()), 10)
        # the neighbour was never touched, and no other fault came
        assert sorted((f["instance_uuid"], f["kind"]) for f in ctl.faults) == sorted(
            [(hung, "heartbeat_loss"), (sick, "unhealthy")])
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()


@pytest.mark.parametrize("on", [True, False], ids=["option-on", "option-off"])
async def test_the_option_decides_whether_the_agent_uses_the_path(sock_dir: Path,
                                                                  on: bool) -> None:
    if on and not steady.AVAILABLE:
        missing("the C steady path is not built (pip install -e . with a C compiler)")
    sim = Simulator(sock_dir, 2, "normal", 100)
    await sim.start()
    conf = cfg.ConfigOpts()
    nfvha_conf.register(conf)
    conf([], default_config_files=[])
    conf.set_override("host", "cmp-steady")
    conf.set_override("spool_dir", "", "heartbeat")
    conf.set_override("steady_path", on, "heartbeat")
    stack = await start_stack(conf, controller=False, compute=True,
                              transport_url="inproc://", instances_dir=str(sock_dir))
    try:
        sessions = stack.compute.sessions
        await until(lambda: len(sessions) == 2 and all(
            len(s.rtt_ms) >= 5 for s in sessions.values()), 30)
        assert all(s.on_steady_path == on for s in sessions.values())
    finally:
        await stack.stop()
        await sim.stop()


def test_an_agent_without_the_extension_says_so_when_the_path_is_wanted() -> None:
    said = steady.unavailable_warning(True, available=False)
    assert said is not None and "not built" in said and "C compiler" in said
    assert steady.unavailable_warning(False, available=False) is None  # turned off on purpose
    assert steady.unavailable_warning(True, available=True) is None
