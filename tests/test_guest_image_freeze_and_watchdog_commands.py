"""The guest image's control commands for a hang of everything that answers
the host, without a VM: /init's control loop runs here in busybox sh, on a
pseudo-terminal standing for the control port, with stand-in processes for
the agent and qemu-ga and busybox's own watchdog feeder.

- ``freeze`` stops the agent, qemu-ga and the watchdog feeder together;
  ``thaw`` resumes the three.
- ``wdog T,P`` starts (or restarts) the feeder; a malformed argument or a
  guest without /dev/watchdog is an error, not a feeder; ``nowdog`` stops it.
- ``nfvha.qga_port=NAME`` on the kernel command line names qemu-ga's port.
"""
from __future__ import annotations

import os
import pty
import shutil
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing

from nfvha.demo import guest_image as gi


def _busybox() -> str:
    busybox = shutil.which("busybox")
    if busybox is None:
        missing("busybox is not installed (apt-get install busybox-static)")
    return busybox


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except FileNotFoundError:
        pass
    return "gone"


def _states(pids: tuple[int, ...], want: str, timeout: float = 5.0) -> list[str]:
    """The processes' states once all are in `want` (a signal lands a little
    after kill returns), or as they are at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = [_state(p) for p in pids]
        if all(g in want for g in got) or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def _feeder_args(pid: int) -> list[bytes]:
    """The feeder's arguments, once the forked shell has become it."""
    deadline = time.monotonic() + 5
    while True:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if argv[0].endswith(b"watchdog") or time.monotonic() > deadline:
            return argv[1:]
        time.sleep(0.01)


class Port:
    """The host end of the control port: a line out, the answer back."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def ask(self, command: str, timeout: float = 10.0) -> str:
        os.write(self.fd, command.encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode().strip()
                if text.startswith(("ok ", "err ")):
                    return text
            assert time.monotonic() < deadline, f"no answer to {command!r}: {self.buf!r}"
            self.buf += os.read(self.fd, 4096)


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[Port, dict[str, int]]]:
    busybox = _busybox()
    master, slave = pty.openpty()
    tty.setraw(slave)  # no echo, no line editing: a virtio port passes bytes as they are
    port = os.ttyname(slave)
    init = gi.INIT
    loop = init[init.index("# Control loop"):]
    funcs = init[init.index("pstate() {"):init.index("AGENT=\nstart_agent()")]
    wdog = init[init.index("WDOG=\nstop_wdog()"):init.index("# reboot | poweroff")]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "watchdog").symlink_to(busybox)
    device = os.environ.get("NFVHA_TEST_WDOG", "/dev/null")  # busybox watchdog writes on
    script = "\n".join([
        "log() { :; }", "link_ports() { :; }", funcs, wdog.replace("/dev/watchdog", device),
        # stand-ins for the agent and qemu-ga, children of this shell as in the VM
        "sleep 600 & AGENT=$!", "sleep 600 & QGA=$!",
        f"echo $AGENT $QGA > {tmp_path}/pids",
        loop.replace("/dev/virtio-ports/__CONTROL__", port).replace("/dev/watchdog", device),
    ])
    env = {"PATH": f"{tmp_path}/bin:{os.path.dirname(busybox)}:/usr/bin:/bin"}
    proc = subprocess.Popen([busybox, "sh", "-c", script], cwd=tmp_path, env=env,
                            start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "pids").exists() or not (tmp_path / "pids").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, "shell did not start"
            time.sleep(0.02)
        agent, qga = map(int, (tmp_path / "pids").read_text().split())
        yield Port(master), {"agent": agent, "qga": qga}
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        os.close(master)
        os.close(slave)


def test_freeze_stops_agent_qemu_ga_and_feeder_together_and_thaw_resumes(control) -> None:
    port, pids = control
    answer = port.ask("wdog 1,500")
    assert answer.startswith("ok wdog "), answer
    feeder = int(answer.split()[2])
    assert _feeder_args(feeder)[:5] == [b"-F", b"-T", b"1", b"-t", b"500ms"]
    everyone = (pids["agent"], pids["qga"], feeder)
    answer = port.ask("freeze")
    assert sorted(map(int, answer.split()[2:])) == sorted(everyone), answer
    assert _states(everyone, "T") == ["T", "T", "T"]
    answer = port.ask("thaw")
    assert sorted(map(int, answer.split()[2:])) == sorted(everyone), answer
    got = _states(everyone, "SR")
    assert all(g in "SR" for g in got), got


def test_wdog_restarts_the_feeder_and_nowdog_stops_it(control) -> None:
    port, _pids = control
    first = int(port.ask("wdog 1,500").split()[2])
    second = int(port.ask("wdog 2,250").split()[2])
    assert second != first and _state(first) == "gone"
    assert _feeder_args(second)[:5] == [b"-F", b"-T", b"2", b"-t", b"250ms"]
    # restarting while frozen: the stopped feeder still ends (SIGTERM, then SIGCONT)
    port.ask("freeze")
    third = int(port.ask("wdog 1,500").split()[2])
    assert _state(second) == "gone" and _states((third,), "SR")[0] in "SR"
    assert port.ask("nowdog") == "ok nowdog"
    assert _state(third) == "gone"
    for bad in ("wdog", "wdog 1", "wdog x,500", "wdog 1,5s"):
        assert port.ask(bad).startswith("err wdog"), bad


@pytest.fixture
def no_watchdog(monkeypatch):
    monkeypatch.setenv("NFVHA_TEST_WDOG", "/nonexistent/watchdog")


def test_a_guest_without_watchdog_device_answers_err(no_watchdog, control) -> None:
    port, _pids = control
    assert port.ask("wdog 1,500") == "err no /nonexistent/watchdog"
    assert port.ask("freeze").startswith("ok freeze")  # the agents alone
    port.ask("thaw")


def test_qga_port_from_the_kernel_command_line(tmp_path: Path) -> None:
    busybox = _busybox()
    line = gi.kernel_cmdline(qga_port="nfvha.bench.qga")
    assert "nfvha.qga_port=nfvha.bench.qga" in line.split()
    init = gi.INIT.replace("__QGA__", gi.QGA_PORT)
    part = init[init.index("NFVHA_AGENT_ARGS="):init.index("if [ -z \"$NFVHA_HOSTNAME\" ]")]
    part = part.replace("/proc/cmdline", str(tmp_path / "cmdline")).replace(
        "/run/nfvha/", f"{tmp_path}/").replace("/etc/nfvha-vm.env", str(tmp_path / "env"))
    for cmdline, want in ((line, "nfvha.bench.qga"), ("console=ttyS0", gi.QGA_PORT)):
        (tmp_path / "cmdline").write_text(cmdline + "\n")
        out = subprocess.run([busybox, "sh", "-c", "log() { :; }\n" + part +
                              'echo "QGA_PORT=$NFVHA_QGA_PORT"'],
                             capture_output=True, text=True, check=True, cwd=tmp_path).stdout
        assert f"QGA_PORT={want}" in out.splitlines(), (cmdline, out)
        assert (tmp_path / "cmdline-args").read_text() == ""  # /init's key, not the agent's
