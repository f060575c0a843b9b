"""A compute agent that stops reporting (killed, hung, host down, bus cut)
leaves its guests unheartbeated: every controller flags the host as silent
within [heartbeat] agent_down_after_s, in GET /v1/hosts, on each of its
instances (host_state) and in /metrics, and clears it when the agent is
back. No VM fault is raised for it. Hosts the store knows must speak up
even if they died before the controller started."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, poll, require_rabbitmq, services_conf, until

from nfvha.controller.api import make_app
from nfvha.controller.hosts import SILENT, UNKNOWN, UP, HostLiveness, TooManyHosts
from nfvha.controller.service import Controller
from nfvha.verify.deploy.procfs import stop_all

WALL = datetime(2026, 11, 24, tzinfo=timezone.utc)


# --- the bookkeeping, on a fake clock ----------------------------------------------
def test_a_host_goes_silent_once_after_the_deadline_and_comes_back() -> None:
    h = HostLiveness(down_after_s=10)
    tr = h.seen("c1", 0.0, WALL, "t0", 3)
    assert (tr.old, tr.new) == (UNKNOWN, UP)
    assert h.seen("c1", 2.0, WALL, "t0", 3) is None          # still up: nothing to say
    assert h.next_deadline() == 12.0
    assert h.check(11.9, WALL) == []
    [tr] = h.check(12.0, WALL)
    assert (tr.host, tr.old, tr.new, tr.quiet_s) == ("c1", UP, SILENT, 10.0)
    assert h.check(30.0, WALL) == []                          # said once
    assert h.next_deadline() is None
    tr = h.seen("c1", 31.0, WALL, "t0", 3)
    assert (tr.old, tr.new, tr.quiet_s, tr.restarted) == (SILENT, UP, 29.0, False)
    assert h.hosts["c1"].silences == 1


def test_an_agent_restart_is_seen_by_its_start_time() -> None:
    h = HostLiveness(down_after_s=10)
    h.seen("c1", 0.0, WALL, "t0")
    tr = h.seen("c1", 1.0, WALL, "t1")                        # restarted within the deadline
    assert (tr.old, tr.new, tr.restarted) == (UP, UP, True)
    h.check(20.0, WALL)
    tr = h.seen("c1", 21.0, WALL, "t2")
    assert (tr.old, tr.new, tr.restarted) == (SILENT, UP, True)
    assert h.hosts["c1"].restarts == 2
    # a report without a start time (an old agent's hello) is no restart
    assert h.seen("c1", 22.0, WALL, None) is None


def test_an_expected_host_never_heard_goes_silent() -> None:
    h = HostLiveness(down_after_s=5)
    h.expect("c9", 100.0, WALL)
    assert h.state("c9") == UNKNOWN
    [tr] = h.check(105.0, WALL)
    assert (tr.old, tr.new, tr.quiet_s) == (UNKNOWN, SILENT, None)
    h.expect("c9", 106.0, WALL)                              # already known: no reset
    assert h.state("c9") == SILENT
    assert h.forget("c9") and h.state("c9") == UNKNOWN and not h.forget("c9")


def test_the_number_of_hosts_tracked_is_bounded() -> None:
    h = HostLiveness(down_after_s=5, max_hosts=2)
    h.seen("a", 0, WALL)
    h.seen("b", 0, WALL)
    with pytest.raises(TooManyHosts):
        h.seen("c", 0, WALL)
    h.expect("d", 0, WALL)                                   # quietly not tracked
    assert sorted(h.hosts) == ["a", "b"]
    h.seen("a", 1, WALL)                                     # known ones go on


# --- one controller, in process ------------------------------------------------------
def _record(uuid_: str) -> dict[str, Any]:
    return {"uuid": uuid_, "state": "enabled", "health": "healthy", "interval_ms": 100}


async def test_controller_flags_silence_on_instances_hosts_and_metrics(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    c = Controller(db, [], agent_down_after_s=0.3)
    seen: list[dict[str, Any]] = []
    c.listeners.append(lambda what: seen.append(what) if what["type"] == "host" else None)
    await c.start()
    inst = str(uuid.uuid4())
    transport = httpx.ASGITransport(app=make_app(c))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as http:
            assert (await c.hello("c1", [_record(inst)]))["ok"]
            t0 = time.monotonic()  # silence is counted from the last sign of life
            assert (await c.alive("c1", "2026-11-24T08:00:00.000000+00:00", 1))["ok"]
            [host] = (await http.get("/v1/hosts")).json()
            assert (host["host"], host["state"], host["instances"],
                    host["instances_on_record"]) == ("c1", "up", 1, 1)
            assert host["last_seen_at"].endswith("+00:00")
            assert (await http.get(f"/v1/instances/{inst}")).json()["host_state"] == "up"

            await until(lambda: any(s["state"] == SILENT for s in seen), 5)
            took = time.monotonic() - t0
            assert 0.25 < took < 2.0, took
            [host] = (await http.get("/v1/hosts")).json()
            assert (host["state"], host["silences"]) == ("silent", 1)
            [i] = (await http.get("/v1/instances")).json()
            assert (i["host_state"], i["heartbeat"]["state"]) == ("silent", "enabled")
            metrics = (await http.get("/metrics")).text
            assert 'nfvha_compute_up{host="c1"} 0.0' in metrics
            assert 'nfvha_compute_silences_total{host="c1"} 1.0' in metrics
            assert (await http.get("/v1/events")).json() == []   # no VM fault for this

            await c.alive("c1", "2026-11-24T08:05:00.000000+00:00", 1)   # restarted
            [host] = (await http.get("/v1/hosts")).json()
            assert (host["state"], host["restarts"]) == ("up", 1)
            assert seen[-1]["old"] == SILENT and seen[-1]["restarted"] is True
            assert 'nfvha_compute_up{host="c1"} 1.0' in (await http.get("/metrics")).text

            # retiring the host: forgotten with its instances
            assert (await http.delete("/v1/hosts/c1")).status_code == 204
            assert (await http.get("/v1/hosts")).json() == []
            assert (await http.get("/v1/instances")).json() == []
            assert 'host="c1"' not in (await http.get("/metrics")).text
            assert (await http.delete("/v1/hosts/c1")).status_code == 404
    finally:
        await c.stop()


async def test_a_host_on_record_that_died_before_the_controller_started_is_flagged(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    first = Controller(db, [], agent_down_after_s=0.3)
    await first.start()
    await first.hello("c1", [_record(str(uuid.uuid4()))])
    await first.stop()

    second = Controller(db, [], agent_down_after_s=0.3)
    await second.start()
    try:
        [host] = await second.list_hosts()
        assert (host["host"], host["state"], host["instances_on_record"]) == ("c1", "unknown", 1)
        await until(lambda: second.hosts is not None and second.hosts.state("c1") == SILENT, 5)
        assert second.metrics.compute_up.labels("c1")._value.get() == 0
    finally:
        await second.stop()


async def test_malformed_alive_reports_are_refused_not_fatal(tmp_path: Path) -> None:
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], agent_down_after_s=5)
    await c.start()
    try:
        for bad in ({"host": ""}, {"host": ["h"]}, {"host": "h" * 300},
                    {"host": "h", "agent_started_at": 7},
                    {"host": "h", "agent_started_at": "x" * 100},
                    {"host": "h", "instances": "3"}, {"host": "h", "instances": True}):
            r = await c.alive(**bad)
            assert r["ok"] is False and r["error"], bad
        assert await c.list_hosts() == []
        assert c.metrics.invalid.labels("alive")._value.get() == 7
        assert (await c.alive("h"))["ok"]
    finally:
        await c.stop()


async def test_a_restarted_agents_hello_counts_the_restart_before_its_first_alive(
        tmp_path: Path) -> None:
    """hello goes to one controller, alive to all: a controller whose first
    word from the new agent is its hello must see the restart there."""
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], agent_down_after_s=5)
    await c.start()
    try:
        await c.hello("c1", [_record(str(uuid.uuid4()))], agent_started_at="t0")
        assert (await c.hello("c1", [], agent_started_at="t1"))["ok"]
        [h] = await c.list_hosts()
        assert (h["restarts"], h["agent_started_at"], h["instances"]) == (1, "t1", 0)
        # a bad start time is ignored (and counted); the instance list still counts
        r = await c.hello("c1", [_record(str(uuid.uuid4()))], agent_started_at=["t2"])
        assert r["ok"] is False and "agent_started_at" in r["errors"][0]
        assert c.metrics.invalid.labels("hello")._value.get() == 1
        [h] = await c.list_hosts()
        assert (h["agent_started_at"], h["restarts"], h["instances"]) == ("t1", 1, 1)
        assert len(await c.list_instances()) == 1
    finally:
        await c.stop()


async def test_tracking_off_keeps_hosts_unknown(tmp_path: Path) -> None:
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], agent_down_after_s=0)
    await c.start()
    try:
        await c.hello("c1", [_record(str(uuid.uuid4()))])
        await c.alive("c1")
        [i] = await c.list_instances()
        assert i["host_state"] == "unknown"
        [h] = await c.list_hosts()
        assert h["state"] == "unknown"
    finally:
        await c.stop()


# --- real processes over RabbitMQ -------------------------------------------------------
@pytest.mark.system
@pytest.mark.parametrize("casts", ["amqp", "oslo"])
async def test_every_controller_sees_a_killed_agent_go_silent_and_come_back(
        sock_dir: Path, casts: str) -> None:
    """`alive` travels as [bus] compute_casts says: aio-pika or oslo.messaging."""
    url = require_rabbitmq()
    run = uuid.uuid4().hex[:8]
    host = f"compute-{run}"
    ports = [free_port(), free_port()]
    down_after = 1.0

    def conf(name: str, port: int) -> Path:
        p = services_conf(sock_dir / f"{name}.conf", url=url, run=run, port=port,
                          instances=sock_dir, db=sock_dir / f"{name}.sqlite", host=host,
                          default=f"controller_id = {name}-{run}\n",
                          extra=f"[bus]\ncompute_casts = {casts}\n",
                          heartbeat=f"agent_report_interval_s = 0.2\n"
                                    f"agent_down_after_s = {down_after}\n")
        return p

    log = open(sock_dir / "services.log", "ab")  # noqa: SIM115

    def start(role: str, cfg: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "nfvha.cli.main", role,
                                 "--config-file", str(cfg)], stdout=log, stderr=log)

    controllers = [start("controller", conf(f"ctl{i}", port)) for i, port in enumerate(ports)]
    compute_conf = conf("compute", 0)
    compute = start("compute", compute_conf)
    procs = [*controllers]
    try:
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=5) for p in ports]

        async def states() -> list[dict[str, Any]]:
            out = []
            for http in clients:
                hosts = {h["host"]: h for h in (await http.get("/v1/hosts")).json()}
                out.append(hosts.get(host, {"state": None}))
            return out

        async def all_in(state: str) -> list[dict[str, Any]] | None:
            now = await states()
            return now if all(h["state"] == state for h in now) else None

        first = await poll(lambda: all_in("up"), 60, "both controllers hear the agent")
        started = first[0]["agent_started_at"]

        up_before = await poll(lambda: all_in("up"), 60, "both controllers hear the agent")
        compute.send_signal(signal.SIGKILL)
        compute.wait(10)
        killed = time.monotonic()
        silent = await poll(lambda: all_in("silent"), 15, "both controllers flag the host")
        took = time.monotonic() - killed
        print(f"\nkill -9 of the compute agent -> both controllers flag it silent in "
              f"{took * 1000:.0f} ms (agent_down_after_s {down_after}, reports every 0.2 s)")
        assert took < down_after + 3.0, took
        for h in silent:   # flagged only once the allowance had passed since its last word
            gap = datetime.fromisoformat(h["since"]) - datetime.fromisoformat(h["last_seen_at"])
            assert gap.total_seconds() >= down_after, h
        for http in clients:
            m = (await http.get("/metrics")).text
            assert f'nfvha_compute_up{{host="{host}"}} 0.0' in m
        # the kill counted once (on a loaded machine an earlier report may have
        # come late enough for a silence of its own before the kill)
        assert all(h["silences"] == b["silences"] + 1 for h, b in zip(silent, up_before))

        compute = start("compute", compute_conf)
        back = await poll(lambda: all_in("up"), 60, "both controllers hear it again")
        assert all(h["restarts"] == 1 and h["agent_started_at"] != started for h in back)
        for http in clients:
            await http.aclose()
    finally:
        stop_all([*procs, compute], 20)
        log.close()


async def test_nfvha_status_shows_whose_agent_is_silent(tmp_path: Path, capsys) -> None:
    import asyncio

    from nfvha.cli.show import show
    from nfvha.controller.api import ApiServer

    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [], agent_down_after_s=0.2)
    await c.start()
    api = ApiServer(make_app(c))
    port = await api.start()
    try:
        quiet, talking = str(uuid.uuid4()), str(uuid.uuid4())
        await c.hello("quiet-host", [_record(quiet)])
        await c.hello("talking-host", [_record(talking)])

        async def keep_talking() -> None:
            while True:
                await c.alive("talking-host")
                await asyncio.sleep(0.05)

        talker = asyncio.create_task(keep_talking())
        await until(lambda: c.hosts is not None and c.hosts.state("quiet-host") == SILENT, 5)
        assert await asyncio.to_thread(show, "status", f"127.0.0.1:{port}", False) == 0
        talker.cancel()
        rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
        assert rows[quiet][1:3] == ["quiet-host", "silent"]
        assert rows[talking][1:3] == ["talking-host", "up"]
    finally:
        await api.stop()
        await c.stop()


async def test_retiring_a_host_on_one_controller_retires_it_on_every_one(
        tmp_path: Path) -> None:
    from nfvha.bus import make_bus

    bus = make_bus("inproc://")
    await bus.start()
    db = f"sqlite:///{tmp_path / 'c.db'}"
    a = Controller(db, [], bus=bus, controller_id="a", agent_down_after_s=5)
    b = Controller(db, [], bus=bus, controller_id="b", agent_down_after_s=5)
    for c in (a, b):
        await c.start()
        await bus.serve_controller(c)
    try:
        await bus.fanout_controller("alive", host="old-host")
        await until(lambda: a.hosts.state("old-host") == UP and b.hosts.state("old-host") == UP)
        assert await a.forget_host("old-host")
        await until(lambda: b.hosts.state("old-host") == UNKNOWN)
        assert await b.list_hosts() == []
    finally:
        await a.stop()
        await b.stop()
        await bus.stop()
