"""A dead host is told from a dead agent (nfvha/controller/hostfailure.py):
the decision on a fake clock, the TCP probe against real sockets, Nova's
service list, and the Masakari sink's one COMPUTE_HOST notification per host."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from openstack import exceptions as sdk_exc

from nfvha.controller.hostfailure import (
    AGENT_ONLY,
    AGENT_UP,
    CHECKING,
    DOWN,
    HELD,
    HOST_DOWN,
    UNKNOWN,
    UP,
    AgentOnly,
    Check,
    Declare,
    Held,
    HostDownRules,
    TcpProbe,
    host_down_event_id,
    nova_verdict,
    tcp_answers,
)


def _check(actions: list) -> Check:
    [c] = actions
    assert isinstance(c, Check)
    return c


def test_silent_agent_and_unanswering_host_is_declared_down_once() -> None:
    r = HostDownRules(recheck_interval_s=5)
    c = _check(r.silent("c1", "t0", ["probe"], now=10.0))
    assert r.state("c1") == CHECKING
    [d] = r.verdict("c1", c.round_id, "probe", DOWN, "no answer", now=10.6)
    assert isinstance(d, Declare) and (d.host, d.episode) == ("c1", "t0")
    assert r.state("c1") == HOST_DOWN
    assert r.due(100.0, lambda h: ["probe"]) == []          # declared: not asked again
    assert r.silent("c1", "t0", ["probe"], now=101.0) == []  # nor declared twice
    assert r.up("c1") == HOST_DOWN and r.state("c1") == AGENT_UP


def test_a_host_that_answers_is_agent_only_and_checked_again() -> None:
    r = HostDownRules(recheck_interval_s=5)
    c = _check(r.silent("c1", "t0", ["probe"], now=0.0))
    [a] = r.verdict("c1", c.round_id, "probe", UP, "refused", now=0.1)
    assert isinstance(a, AgentOnly) and r.state("c1") == AGENT_ONLY
    assert r.due(5.0, lambda h: ["probe"]) == []             # not yet
    c2 = _check(r.due(5.1, lambda h: ["probe"]))             # the host may die later
    assert c2.round_id != c.round_id
    [d] = r.verdict("c1", c2.round_id, "probe", DOWN, "unreachable", now=5.5)
    assert isinstance(d, Declare)


def test_any_signal_saying_up_wins_and_unknown_counts_for_nothing() -> None:
    r = HostDownRules()
    c = _check(r.silent("c1", "t0", ["probe", "nova"], now=0.0))
    assert r.verdict("c1", c.round_id, "nova", DOWN, "nova-compute down", 0.1) == []
    [a] = r.verdict("c1", c.round_id, "probe", UP, "accepted", 0.2)
    assert isinstance(a, AgentOnly) and "host answers" in a.why

    r = HostDownRules()
    c = _check(r.silent("c1", "t0", ["probe", "nova"], now=0.0))
    r.verdict("c1", c.round_id, "probe", UNKNOWN, "name does not resolve", 0.1)
    [d] = r.verdict("c1", c.round_id, "nova", DOWN, "nova-compute down", 0.2)
    assert isinstance(d, Declare) and "nova-compute down" in d.why

    r = HostDownRules()
    c = _check(r.silent("c1", "t0", ["probe"], now=0.0))
    [a] = r.verdict("c1", c.round_id, "probe", UNKNOWN, "?", 0.1)
    assert isinstance(a, AgentOnly) and r.state("c1") == AGENT_ONLY


def test_without_a_second_signal_a_silent_host_is_never_down() -> None:
    r = HostDownRules()
    [a] = r.silent("c1", "t0", [], now=0.0)
    assert isinstance(a, AgentOnly) and "no second signal" in a.why
    assert r.due(1e9, lambda h: []) == []


def test_an_agent_back_during_a_check_makes_its_late_verdict_void() -> None:
    r = HostDownRules()
    c = _check(r.silent("c1", "t0", ["probe"], now=0.0))
    assert r.up("c1") == CHECKING
    assert r.verdict("c1", c.round_id, "probe", DOWN, "late", 1.0) == []
    assert r.state("c1") == AGENT_UP


def test_too_many_hosts_down_at_once_is_held_not_declared() -> None:
    r = HostDownRules(recheck_interval_s=5, max_down_fraction=0.5)
    for h in ("a", "b", "c", "d"):
        r.known(h)
    ca = _check(r.silent("a", "t", ["probe"], 0.0))
    cb = _check(r.silent("b", "t", ["probe"], 0.0))
    cc = _check(r.silent("c", "t", ["probe"], 0.0))
    assert isinstance(r.verdict("a", ca.round_id, "probe", DOWN, "x", 0.5)[0], Declare)
    assert isinstance(r.verdict("b", cb.round_id, "probe", DOWN, "x", 0.5)[0], Declare)
    [held] = r.verdict("c", cc.round_id, "probe", DOWN, "x", 0.5)   # 3 of 4: us, likely
    assert isinstance(held, Held) and r.state("c") == HELD
    r.up("a")                                                        # one came back
    c2 = _check(r.due(5.5, lambda h: ["probe"]))
    assert isinstance(r.verdict("c", c2.round_id, "probe", DOWN, "x", 6.0)[0], Declare)


def test_event_ids_are_the_same_for_every_controller_and_differ_per_vm() -> None:
    a = host_down_event_id("c1", "2026-12-02T10:00:00+00:00", "vm1")
    assert a == host_down_event_id("c1", "2026-12-02T10:00:00+00:00", "vm1")
    assert a != host_down_event_id("c1", "2026-12-02T10:00:00+00:00", "vm2")
    assert a != host_down_event_id("c1", "2026-12-02T11:00:00+00:00", "vm1")


def test_nova_service_list_verdict() -> None:
    assert nova_verdict("c1", [{"host": "c1", "state": "up"}])[0] == UP
    assert nova_verdict("c1", [{"host": "c1", "state": "down"}])[0] == DOWN
    assert nova_verdict("c1", [{"host": "c1", "state": "up", "forced_down": True}])[0] == DOWN
    assert nova_verdict("c1", [{"host": "c2", "state": "down"}])[0] == UNKNOWN
    assert nova_verdict("c1", [])[0] == UNKNOWN
    # "up" proves life only with a report after the agent's last word: Nova
    # calls a service up for service_down_time (60 s) after its last report
    from datetime import datetime, timezone
    silent_since = datetime(2026, 12, 2, 10, 0, 0, tzinfo=timezone.utc)
    stale = {"host": "c1", "state": "up", "updated_at": "2026-12-02T09:59:55.000000"}
    fresh = {"host": "c1", "state": "up", "updated_at": "2026-12-02T10:00:05.000000"}
    assert nova_verdict("c1", [stale], silent_since)[0] == UNKNOWN
    assert nova_verdict("c1", [fresh], silent_since)[0] == UP
    assert nova_verdict("c1", [{"host": "c1", "state": "up"}], silent_since)[0] == UNKNOWN


# --- the probe, real sockets --------------------------------------------------------
async def test_probe_says_up_for_an_accept_and_for_a_refusal() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await tcp_answers("127.0.0.1", port, 1.0))[0] == UP
    finally:
        server.close()
        await server.wait_closed()
    verdict, how = await tcp_answers("127.0.0.1", port, 1.0)    # nobody listens now
    assert verdict == UP and "refused" in how


async def test_probe_says_down_when_no_connect_is_answered() -> None:
    # a listener whose backlog is full answers no SYN: as a host that is gone
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        await asyncio.sleep(0.1)
        verdict, detail = await TcpProbe(port, count=2, interval_s=0.05,
                                         timeout_s=0.3).check("127.0.0.1")
        assert verdict == DOWN and "no answer to 2 connects" in detail, detail
    finally:
        for s in fillers:
            s.close()
        lst.close()


async def test_probe_of_a_name_that_does_not_resolve_tells_nothing() -> None:
    verdict, _ = await TcpProbe(22, count=1, timeout_s=2).check("no-such-host.invalid")
    assert verdict == UNKNOWN


# --- Masakari: one COMPUTE_HOST notification per host ---------------------------------
def http_error(status: int, message: str) -> sdk_exc.HttpException:
    """What openstacksdk raises for an HTTP answer of ``status``."""
    import requests

    r = requests.Response()
    r.status_code, r._content = status, b""
    return sdk_exc.HttpException(message=message, response=r)


class _Created:
    notification_uuid = "n-1"


class _InstanceHA:
    def __init__(self, answers: list[Any]) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answers = answers

    def create_notification(self, **kw: Any) -> Any:
        import time
        self.calls.append(kw)
        time.sleep(0.05)  # parallel deliveries overlap this call
        a = self.answers.pop(0) if self.answers else _Created()
        if isinstance(a, Exception):
            raise a
        return a


class _Conn:
    def __init__(self, ha: _InstanceHA) -> None:
        self.instance_ha = ha


async def test_masakari_gets_one_host_notification_for_all_vms_of_a_down_host() -> None:
    from openstack.connection import Connection

    from nfvha.controller.reporters.masakari import MasakariReporter

    ha = _InstanceHA([])
    rep = MasakariReporter(lambda: _Conn(ha))  # type: ignore[arg-type,return-value]
    assert not isinstance(rep, Connection)
    events = [{"id": f"e{i}", "instance_uuid": f"vm{i}", "host": "c1", "kind": "host_down",
               "corrective_action": "reboot", "detail": "",
               "detected_at": "2026-12-02T10:00:00.000000+00:00"} for i in range(20)]
    notes = await asyncio.gather(*(rep.deliver(e) for e in events))
    [call] = ha.calls
    assert call == {"type": "COMPUTE_HOST", "hostname": "c1",
                    "generated_time": "2026-12-02T10:00:00.000000+00:00",
                    "payload": {"event": "STOPPED", "host_status": "NORMAL",
                                "cluster_status": "OFFLINE"}}
    assert set(notes) == {"COMPUTE_HOST notification_uuid n-1"}


async def test_masakari_host_notification_failure_is_retried_and_a_duplicate_is_done() -> None:
    from nfvha.controller.reporters import Retry
    from nfvha.controller.reporters.masakari import MasakariReporter

    dup = http_error(409, "Notification received from host c1 of type COMPUTE_HOST is "
                          "duplicate.")
    ha = _InstanceHA([http_error(503, "boom"), dup])
    rep = MasakariReporter(lambda: _Conn(ha))  # type: ignore[arg-type,return-value]
    ev = {"id": "e1", "instance_uuid": "vm1", "host": "c1", "kind": "host_down",
          "corrective_action": "none", "detail": "",
          "detected_at": "2026-12-02T10:00:00.000000+00:00"}
    with pytest.raises(Retry):
        await rep.deliver(ev)
    note = await rep.deliver(ev)                     # the retry: Masakari has it already
    assert "already recovers the host" in note
    assert len(ha.calls) == 2


def test_hosts_options_reach_the_masakari_sink_and_the_monitor() -> None:
    from oslo_config import cfg

    from nfvha import conf as nfvha_conf
    from nfvha.controller import hostfailure
    from nfvha.controller.hosts import HostLiveness
    from nfvha.controller.reporters import build

    conf = cfg.ConfigOpts()
    nfvha_conf.register(conf)
    conf([], default_config_files=[])
    conf.set_override("masakari_host_status", "UNKNOWN", "hosts")
    [rep] = build(["masakari"], conf)
    assert rep.host_status == "UNKNOWN"                               # type: ignore[attr-defined]

    class _C:
        hosts = HostLiveness(10)

        async def emit(self, ev: Any, skip: Any) -> None: ...

    conf.set_override("management_addresses", {"c1": "10.0.0.1"}, "hosts")
    conf.set_override("management_address_pattern", "{host}-mgmt", "hosts")
    mon = hostfailure.build(conf, _C())
    assert mon is not None and mon.probe is not None and mon.nova is None
    assert mon.management_address("c1") == "10.0.0.1"
    assert mon.management_address("c2") == "c2-mgmt"
    mon.address_reported("c2", "10.0.0.2")                            # the agent's word
    assert mon.management_address("c2") == "10.0.0.2"
    conf.set_override("probe_port", 0, "hosts")
    assert hostfailure.build(conf, _C()) is None                      # no second signal


async def test_a_store_that_fails_delays_the_host_down_report_but_loses_none() -> None:
    from nfvha.controller.hostfailure import HostFailureMonitor

    class Probe:
        async def check(self, address: str) -> tuple[str, str]:
            return DOWN, "gone"

    reads = {"n": 0}

    async def instances_of(host: str) -> list[dict[str, Any]]:
        reads["n"] += 1
        if reads["n"] == 1:
            raise OSError("database unreachable")
        return [{"uuid": f"vm{i}", "corrective_action": "reboot",
                 "updated_at": "2026-12-02T10:00:00.000000+00:00"} for i in range(5)]

    tried: dict[str, int] = {}
    stored: set[str] = set()

    async def emit(ev: dict[str, Any], skip: Any) -> None:
        tried[ev["id"]] = tried.get(ev["id"], 0) + 1
        if ev["instance_uuid"] in ("vm1", "vm3") and tried[ev["id"]] == 1:
            raise OSError("write failed")
        stored.add(ev["id"])

    mon = HostFailureMonitor(HostDownRules(), probe=Probe(),  # type: ignore[arg-type]
                             addresses={"c1": "10.0.0.1"}, instances_of=instances_of,
                             emit=emit)
    try:
        mon.agent_silent("c1", "t0")
        for _ in range(200):
            if mon.reports:
                break
            await asyncio.sleep(0.05)
        [report] = mon.reports
        assert stored == set(report.events) and len(stored) == 5
        assert sorted(tried.values()) == [1, 1, 1, 2, 2]
    finally:
        await mon.aclose()


def test_a_bad_address_pattern_stops_the_start_and_retired_hosts_are_forgotten() -> None:
    from oslo_config import cfg

    from nfvha import conf as nfvha_conf
    from nfvha.controller import hostfailure
    from nfvha.controller.hosts import HostLiveness

    conf = cfg.ConfigOpts()
    nfvha_conf.register(conf)
    conf([], default_config_files=[])

    class _C:
        hosts = HostLiveness(10)

        async def emit(self, ev: Any, skip: Any) -> None: ...

    c = _C()
    conf.set_override("management_address_pattern", "{hostname}-mgmt", "hosts")
    with pytest.raises(SystemExit, match="management_address_pattern"):
        hostfailure.build(conf, c)
    conf.set_override("management_address_pattern", "{host}-mgmt", "hosts")
    mon = hostfailure.build(conf, c)
    assert mon is not None
    from datetime import datetime, timezone
    c.hosts.seen("c1", 0.0, datetime.now(timezone.utc))
    mon.address_reported("c1", "10.0.0.1")
    assert "c1" in mon.rules.hosts
    c.hosts.forget("c1")                                              # retired
    mon.tick()
    assert "c1" not in mon.rules.hosts and "c1" not in mon.reported


async def test_nova_force_down_marks_the_dead_hosts_service_alongside_the_reports() -> None:
    from nfvha.controller.hostfailure import HostFailureMonitor, NovaComputeService

    class Svc:
        host, state, is_forced_down = "c1", "up", False

    class Compute:
        def __init__(self) -> None:
            self.forced: list[tuple[Any, ...]] = []

        def services(self, binary: str, host: str) -> list[Svc]:
            return [Svc()] if host == "c1" else []

        def update_service_forced_down(self, svc: Any, host: str, binary: str,
                                       forced: bool) -> None:
            self.forced.append((host, binary, forced))

    class Conn:
        def __init__(self) -> None:
            self.compute = Compute()

        def close(self) -> None:
            pass

    conn = Conn()

    class Probe:
        async def check(self, address: str) -> tuple[str, str]:
            return DOWN, "gone"

    async def instances_of(host: str) -> list[dict[str, Any]]:
        return [{"uuid": "vm1", "corrective_action": "reboot"}]

    async def emit(ev: dict[str, Any], skip: Any) -> None:
        pass

    nova = NovaComputeService(lambda: conn)
    # Nova says the service is up: the probe alone cannot make it down (up wins)
    mon = HostFailureMonitor(HostDownRules(), probe=Probe(),  # type: ignore[arg-type]
                             nova=nova, addresses={"c1": "10.0.0.1"},
                             instances_of=instances_of, emit=emit, nova_force_down=True)
    try:
        mon.agent_silent("c1", "t0")
        for _ in range(100):
            await asyncio.sleep(0.02)
        assert mon.rules.state("c1") == AGENT_ONLY and conn.compute.forced == []
        Svc.state = "down"                                  # Nova agrees now
        mon.rules.hosts["c1"].next_check = 0.0
        mon.tick()
        for _ in range(200):
            if conn.compute.forced:
                break
            await asyncio.sleep(0.02)
        assert mon.rules.state("c1") == HOST_DOWN
        assert conn.compute.forced == [("c1", "nova-compute", True)]
        assert len(mon.reports) == 1
    finally:
        await mon.aclose()
    with pytest.raises(ValueError):
        HostFailureMonitor(HostDownRules(), instances_of=instances_of, emit=emit,
                           nova_force_down=True)
