"""Shared test helpers.

`require(...)` is how a test says it needs a system component: on a user's
machine without it the test skips with the reason; in CI (CI=true) it fails,
because CI installs everything.
"""
from __future__ import annotations

import os
import shutil
import socket
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


def require_command(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None and not os.path.exists(f"/usr/sbin/{name}"):
            missing(f"{name} is not installed (make test installs it when run as root)")


def require_tcp(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError as exc:
        missing(f"{what} is not reachable at {host}:{port}: {exc}")


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        missing(f"{what} needs root")


class CastRecorder:
    """A controller-side bus that records what it would cast to compute agents."""

    def __init__(self) -> None:
        self.casts: list[tuple] = []

    async def cast_compute(self, host: str, method: str, **kw: object) -> None:
        self.casts.append((host, method, kw))

    async def fanout_compute(self, method: str, **kw: object) -> None:
        self.casts.append(("*", method, kw))


async def spawn_nfvha(*args: str, log):
    """`python -m nfvha.cli.main ARGS...` (controller, compute, ...) with its
    output appended to the file `log`."""
    import asyncio
    import sys
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.cli.main", *args, stdout=out, stderr=out)


async def stop_processes(procs, grace: float = 15.0) -> None:
    """SIGCONT (a test may have frozen one) and SIGTERM to every process still
    running, then SIGKILL what has not exited after `grace` seconds."""
    import asyncio
    import signal
    running = [p for p in procs if p.returncode is None]
    for p in running:
        try:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in running:
        try:
            await asyncio.wait_for(p.wait(), grace)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()


class RunningController:
    """A real `nfvha all-in-one` process (the `all_in_one_controller` fixture):
    `proc` (asyncio process), `url` (http://127.0.0.1:<port>), `log` (its output)."""

    def __init__(self, proc, url: str, log) -> None:
        self.proc, self.url, self.log = proc, url, log


@pytest.fixture
async def all_in_one_controller(tmp_path, monkeypatch):
    """`nfvha all-in-one` on a free port with SQLite in tmp_path, answering
    /healthz (60 s at most, else the test fails with its log's tail); stopped
    (SIGTERM, SIGKILL after 20 s) after the test unless the test did it."""
    import asyncio
    import time

    import httpx

    monkeypatch.setenv("PYTHONUNBUFFERED", "1")     # its log complete when a test reads it
    port = free_port()
    (tmp_path / "instances").mkdir()
    log = tmp_path / "aio.log"
    proc = await spawn_nfvha(
        "all-in-one", "--instances-dir", str(tmp_path / "instances"),
        "--api", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", log=log)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            while True:
                try:
                    if (await c.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.2)
        yield RunningController(proc, url, log)
    finally:
        await stop_processes([proc], grace=20)


def require_rabbitmq() -> str:
    """Returns the transport URL of the local RabbitMQ."""
    url = os.environ.get("NFVHA_TEST_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
    require_tcp("127.0.0.1", 5672, "RabbitMQ")
    return url


@pytest.fixture
def sock_dir():
    """A short temporary directory: UNIX socket paths are limited to 107 bytes,
    and pytest's tmp_path can be longer."""
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="nfvha-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def poll(fn, timeout: float, what: str):
    """Calls `fn` (plain or async) every 100 ms until it returns something
    true, and returns that; an HTTP error counts as "not yet" (a service
    still starting). Fails the test after `timeout` with the last value."""
    import asyncio
    import inspect
    import time

    import httpx

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


async def until(cond, timeout: float = 10.0) -> None:
    """Waits (polling every 20 ms) until `cond()` holds; fails the test after `timeout`."""
    import asyncio

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def services_conf(path, *, url: str, run: str, port: int, instances, db,
                  host: str | None = None, extra: str = "", heartbeat: str = "",
                  default: str = ""):
    """An nfvha.conf for controller/compute processes over RabbitMQ: their own
    exchange (`run`), SQLite `db`, REST on `port`, no fault spool. `extra`
    adds sections; `default` and `heartbeat` add lines to those sections."""
    path.write_text(
        f"[DEFAULT]\nhost = {host or f'compute-{run}'}\ncontrol_exchange = nfvha-test-{run}\n"
        f"{default}"
        f"[bus]\ntransport_url = {url}\n"
        f"[database]\nconnection = sqlite:///{db}\n"
        f"[api]\nport = {port}\n"
        f"[heartbeat]\ninstances_dir = {instances}\nspool_dir =\n{heartbeat}"
        f"{extra}")
    return path


# headless Chromium as the tests run it (reports, dashboard): no sandbox as
# root, nothing fetched from the network on its own
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def libvirtd():
    """One libvirtd at qemu:///system for the whole session
    (nfvha/compute/libvirt_daemon.py): started under a child-subreaper
    supervisor and stopped at the end (its leftover domains destroyed), or
    the one already running, reused as it is."""
    from nfvha.compute import libvirt_daemon

    require_command("qemu-system-x86_64")
    reason = libvirt_daemon.unavailable_reason()
    if reason:
        missing(reason)
    daemon = libvirt_daemon.LibvirtDaemon()
    try:
        daemon.start()
    except libvirt_daemon.LibvirtdError as exc:
        missing(f"libvirtd does not start here: {exc}")
    yield daemon
    daemon.stop()


class StubController:
    """A controller's bus endpoint as a compute agent test needs it: keeps the
    faults (acked), the state changes and the recovery results, takes the rest."""

    controller_id = "ctl-1"

    def __init__(self) -> None:
        self.faults: list[dict] = []
        self.results: list[dict] = []
        self.states: list[dict] = []

    async def hello(self, **kw: object) -> None:
        pass

    async def instance_state(self, **kw: object) -> None:
        self.states.append(kw)

    async def alive(self, **kw: object) -> None:
        pass

    async def fault(self, event: dict) -> dict:
        self.faults.append(event)
        return {"ok": True, "id": event["id"]}

    async def recovery_result(self, **kw: object) -> None:
        self.results.append(kw)


class RecordingSink:
    """A reporter that acknowledges and keeps every event it is given."""

    name = "record"

    def __init__(self) -> None:
        self.events: list[dict] = []

    async def deliver(self, event: dict) -> None:
        self.events.append(event)


@pytest.fixture(scope="session")
def guest_image():
    """The project's guest image (nfvha/demo/guest_image.py), built (cached)
    and installed where libvirt's QEMU can read it."""
    from nfvha.demo.libvirt_guests import prepare_image

    try:
        return prepare_image()
    except SystemExit as exc:  # the builder's way to say a part is missing
        missing(f"guest image: {exc}")
    except PermissionError as exc:  # installing it for libvirt's QEMU needs root
        missing(f"guest image not installable for libvirt: {exc}")


# --- Real Keystone and Masakari from PyPI (tests/openstack_services.py) ----
# Installed by scripts/install-openstack.sh into their own venv (cached in
# /opt), databases on the local MariaDB, started once per session.

@pytest.fixture(scope="session")
def real_keystone():
    """Keystone (SQL backend, fernet tokens, bootstrapped admin) under
    gunicorn; its catalog's "compute" endpoint is `nova_url`, where a test
    serves the Nova stand-in (`NovaStandin().start(port=ks.nova_port)`)."""
    import openstack_services as oss

    require_tcp("127.0.0.1", 3306, "MariaDB")
    try:
        ks = oss.start_keystone(oss.install(), str(os.getpid()))
    except oss.Unavailable as exc:
        missing(f"real Keystone: {exc}")
    yield ks
    oss.cleanup_keystone(ks)


@pytest.fixture(scope="session")
def real_masakari(real_keystone):
    """masakari-api (keystonemiddleware against `real_keystone`) and
    masakari-engine (over the local RabbitMQ; Nova through the catalog)."""
    import openstack_services as oss

    url = require_rabbitmq()
    try:
        m = oss.start_masakari(real_keystone, str(os.getpid()), url)
    except oss.Unavailable as exc:
        missing(f"real Masakari: {exc}")
    yield m
    oss.cleanup_masakari(m)


# -- heartbeat machines in the steady state (the C path's tests) ------------------------

T0 = 1000.0


def answer_msg(state: Any, **changes: object) -> dict:
    """A healthy guest's answer to the state's current challenge."""
    from nfvha.protocol import heartbeat as hb

    msg = hb.build_challenge_response(sequence=7, heartbeat_response=state.nonce,
                                      heartbeat_health="healthy", corrective_action="reboot")
    msg.update(changes)
    return msg


def steady_state(seed: int, rtts: list[float], interval_ms: int = 100, t0: float = T0,
                 **changes: object) -> tuple[Any, float]:
    """A machine driven through registration from ``t0`` and len(rtts) answered
    challenges (the Python machine all the way), then ``changes``; and the time now."""
    from nfvha.protocol import heartbeat as hb
    from nfvha.protocol import host
    from nfvha.protocol._state import evolve

    state = host.initial(host.HostConfig(), nonce_seed=seed)
    now = t0
    state, _, _ = host.step(state, host.Connected(), now)
    init = hb.build_init(sequence=1, invocation_id=9, name="vm", corrective_action="reboot",
                         heartbeat_interval_ms=interval_ms)
    state, _, _ = host.step(state, host.Received(init), now)
    for rtt in rtts:
        state, _, _ = host.step(state, host.Received(answer_msg(state)), now + rtt / 1000.0)
        now = state.deadline
        state, out, _ = host.step(state, host.Tick(), now)
        assert type(out[-1]) is host.Send
    state, _, _ = host.step(state, host.Received(answer_msg(state)), now + 0.001)
    return evolve(state, **changes), now + 0.001


