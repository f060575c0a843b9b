"""Under systemd (etc/systemd/*.service, Type=notify with WatchdogSec) the
compute agent, the controller and the guest agent say READY=1 once they
serve, ping WATCHDOG=1 from their event loop every half period (a hung
loop stops pinging, so systemd restarts it), and STOPPING=1 on SIGTERM.
Checked against a real notify socket, the way systemd listens; the units
themselves pass `systemd-analyze verify`."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import require_command

from nfvha.guest.sdnotify import Notifier

ROOT = Path(__file__).resolve().parent.parent


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket. A thread reads
    it, so each line is stamped when it arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.got: list[tuple[float, str]] = []
        self._taken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.got += [(now, line) for line in data.decode().splitlines()]

    def read(self, seconds: float) -> list[tuple[float, str]]:
        """What arrived since the last read, after waiting `seconds`."""
        time.sleep(seconds)
        end = len(self.got)
        new, self._taken = self.got[self._taken:end], end
        return new

    def wait_for(self, line: str, seconds: float) -> float:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for t, got in self.read(0.05):
                if got == line:
                    return t
        raise AssertionError(f"no {line} within {seconds} s; got {self.got[-5:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# --- the protocol -------------------------------------------------------------------
def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled and n.ready() is False and n.watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False


def test_ready_and_status_reach_a_path_and_an_abstract_socket(sock_dir: Path) -> None:
    listener = NotifySocket(sock_dir / "notify")
    try:
        n = Notifier({"NOTIFY_SOCKET": str(listener.path)})
        assert n.ready("compute")
        assert [line for _t, line in listener.read(0.2)] == ["READY=1", "STATUS=compute"]
        n.close()
    finally:
        listener.close()
    name = f"nfvha-test-{os.getpid()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0" + name)
    abstract.settimeout(1)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).stopping()
        assert abstract.recv(100) == b"STOPPING=1"
    finally:
        abstract.close()


def test_a_vanished_socket_is_not_fatal(sock_dir: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(sock_dir / "gone")})
    assert n.enabled and n.notify("WATCHDOG=1") is False


def test_watchdog_period_is_only_taken_for_this_process() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "4000000"}
    assert Notifier(env).watchdog_s == 4.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 4.0
    assert Notifier({**env, "WATCHDOG_PID": "1"}).watchdog_s is None   # meant for the parent
    for junk in ("", "0", "-5", "soon"):
        assert Notifier({**env, "WATCHDOG_USEC": junk}).watchdog_s is None


async def test_a_blocked_event_loop_stops_the_pings(sock_dir: Path) -> None:
    listener = NotifySocket(sock_dir / "notify")
    n = Notifier({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "100000"})
    task = asyncio.create_task(n.watchdog())
    try:
        await asyncio.sleep(0.3)
        time.sleep(0.6)                     # the loop hangs
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    pings = [t for t, line in listener.read(0.1) if line == "WATCHDOG=1"]
    listener.close()
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert len(pings) >= 6
    # every 50 ms while the loop runs, nothing while it hangs
    assert max(gaps) > 0.55 and sorted(gaps)[len(gaps) // 2] < 0.1


# --- the real services ----------------------------------------------------------------
def _start(argv: list[str], listener: NotifySocket, watchdog_usec: int,
           log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(listener.path),
           "WATCHDOG_USEC": str(watchdog_usec)}
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=ROOT)


def _check_service(proc: subprocess.Popen[bytes], listener: NotifySocket, log: Path) -> None:
    try:
        listener.wait_for("READY=1", 30)
        pings = [t for t, line in listener.read(1.0) if line == "WATCHDOG=1"]
        assert len(pings) >= 4, (pings, log.read_text()[-2000:])   # every 100 ms
        proc.send_signal(signal.SIGSTOP)                               # hung
        listener.read(0.2)
        assert [line for _t, line in listener.read(0.6)] == []
        proc.send_signal(signal.SIGCONT)
        listener.wait_for("WATCHDOG=1", 5)
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1", 10)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()


def test_all_in_one_service_notifies_ready_pings_and_stopping(sock_dir: Path) -> None:
    listener = NotifySocket(sock_dir / "notify")
    (sock_dir / "i").mkdir()
    proc = _start([sys.executable, "-m", "nfvha.cli.main", "all-in-one",
                   "--instances-dir", str(sock_dir / "i"), "--api", "127.0.0.1:0",
                   "--db", f"sqlite:///{sock_dir / 'n.sqlite'}"],
                  listener, 200_000, sock_dir / "service.log")
    _check_service(proc, listener, sock_dir / "service.log")


def test_guest_agent_notifies_ready_pings_and_stopping(sock_dir: Path) -> None:
    listener = NotifySocket(sock_dir / "notify")
    proc = _start([sys.executable, "-m", "nfvha.guest", "--device", str(sock_dir / "absent")],
                  listener, 200_000, sock_dir / "guest.log")
    _check_service(proc, listener, sock_dir / "guest.log")


def test_the_units_pass_systemd_analyze(tmp_path: Path) -> None:
    require_command("systemd-analyze")
    units = sorted((ROOT / "etc" / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"nfvha-compute.service", "nfvha-controller.service",
                                       "nfvha-guest.service"}
    bindir = Path(sys.executable).parent
    for unit in units:
        text = unit.read_text()
        assert re.search(r"^Type=notify$", text, re.M) and re.search(r"^WatchdogSec=", text, re.M)
        assert re.search(r"^Restart=always$", text, re.M)
        # verify checks that ExecStart exists: point it at this checkout's scripts
        local = re.sub(r"/usr/local/bin/(nfvha(?:-guest)?)", lambda m: str(bindir / m[1]), text)
        (tmp_path / unit.name).write_text(local)
        res = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit.name)],
                             capture_output=True, text=True, timeout=60)
        problems = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
        assert res.returncode == 0 and problems == [], (unit.name, problems)


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # a test run under systemd must not ping the real manager
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(key, raising=False)
