"""The real nfvha-guest process, through a real pseudo-terminal bridged to a UNIX socket.

socat stands in for QEMU's listening chardev socket (docs/protocol.md)
(``socat UNIX-LISTEN:P PTY,link=DEV,raw,echo=0``): the agent opens DEV, the
test-side host connects to P and runs nfvha.protocol.host with real time.
When the host side closes, socat exits and the pty goes away, which is what
the guest sees when the host end of a virtio-serial port hangs up.
"""
from __future__ import annotations

import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest
from conftest import require_command

from nfvha.protocol import heartbeat as hb
from nfvha.protocol import host
from nfvha.protocol.framing import FrameError, LineDecoder, encode
from nfvha.protocol.host import (
    Connected,
    Disconnected,
    Fault,
    HostConfig,
    Malformed,
    Received,
    RoundTrip,
    Send,
    StateChanged,
    Tick,
    Violation,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"


class TestHost:
    """The compute side for one channel, on a thread, with real time."""

    __test__ = False

    def __init__(self, sock_path: str, config: HostConfig = HostConfig(),
                 connect_timeout: float = 10.0) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(sock_path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.state = host.initial(config, nonce_seed=random.getrandbits(64))
        self.outputs: List[Tuple[float, Any]] = []
        self.received: List[dict] = []
        self._outbox: List[dict] = []
        self._cond = threading.Condition()
        self._stop = False
        self._deadline: Optional[float] = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _step(self, event: object) -> None:
        now = time.monotonic()
        self.state, outs, self._deadline = host.step(self.state, event, now)
        for out in outs:
            if isinstance(out, Send):
                try:
                    self.sock.sendall(encode(out.msg))
                except OSError:
                    pass
        with self._cond:
            self.outputs.extend((now, o) for o in outs if not isinstance(o, Send))
            self._cond.notify_all()

    def _run(self) -> None:
        decoder = LineDecoder(hb.MAX_MSG)
        self._step(Connected())
        while not self._stop:
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline:
                self._step(Tick())
                continue
            timeout = 0.05 if self._deadline is None else min(0.05, self._deadline - now)
            with self._cond:
                outbox, self._outbox = self._outbox, []
            for msg in outbox:
                self.sock.sendall(encode(msg))
            try:
                readable, _, _ = select.select([self.sock], [], [], max(timeout, 0))
            except (OSError, ValueError):
                return
            if not readable:
                continue
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._step(Disconnected())
                return
            for item in decoder.feed(data):
                if isinstance(item, FrameError):
                    self._step(Malformed(item.reason))
                else:
                    with self._cond:
                        self.received.append(item)
                    self._step(Received(item))

    def send(self, msg: dict) -> None:
        with self._cond:
            self._outbox.append(msg)

    def wait_for(self, pred: Callable[[Any], bool], timeout: float, after: float = 0.0) -> Any:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, out in self.outputs:
                    if t >= after and pred(out):
                        return t, out
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"not seen within {timeout} s; outputs: {self.outputs[-15:]}")
                self._cond.wait(left)

    def wait_received(self, msg_type: str, timeout: float) -> dict:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.received:
                    if msg.get("msg_type") == msg_type:
                        return msg
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {msg_type} within {timeout} s")
                self._cond.wait(left)

    def count(self, cls: type, kind: Optional[str] = None) -> int:
        with self._cond:
            return sum(1 for _, o in self.outputs
                       if isinstance(o, cls) and (kind is None or getattr(o, "kind", None) == kind))

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(5)
        self.sock.close()


def enabled(o: Any) -> bool:
    return isinstance(o, StateChanged) and o.state == "enabled"


class Rig:
    """socat (the QEMU stand-in) + the agent process + a TestHost."""

    def __init__(self, python: str, agent_args: List[str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="nfvha-ga-")
        self.sock_path = os.path.join(self.dir, "hb.sock")
        self.dev = os.path.join(self.dir, "vport")
        self.flag = os.path.join(self.dir, "healthy")
        open(self.flag, "w").close()
        self.socat: Optional[subprocess.Popen] = None
        self.start_socat()
        env = dict(os.environ, PYTHONPATH=REPO)
        self.log_path = os.path.join(self.dir, "agent.log")
        self.log = open(self.log_path, "wb")
        args = [a.replace("{flag}", self.flag).replace("{dir}", self.dir) for a in agent_args]
        self.agent = subprocess.Popen(
            [python, "-m", "nfvha.guest", "--device", self.dev, "--log-level", "DEBUG"] + args,
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        self.hosts: List[TestHost] = []

    def start_socat(self) -> None:
        self.socat = subprocess.Popen(
            ["socat", f"UNIX-LISTEN:{self.sock_path},unlink-early",
             f"PTY,link={self.dev},raw,echo=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def connect(self, config: HostConfig = HostConfig()) -> TestHost:
        h = TestHost(self.sock_path, config)
        self.hosts.append(h)
        return h

    def agent_log(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def close(self) -> None:
        for h in self.hosts:
            h.close()
        for proc in (self.agent, self.socat):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def interpreters() -> List[Any]:
    return [pytest.param(sys.executable, id="py3"),
            pytest.param(PY38, id="py38")]


@pytest.fixture(params=interpreters())
def python(request: Any) -> str:
    if not os.path.exists(request.param):
        require_command(request.param)  # skips (or fails in CI) with a clear reason
    return request.param


@pytest.fixture
def rig_factory() -> Iterator[Callable[..., Rig]]:
    require_command("socat")
    rigs: List[Rig] = []

    def make(python: str = sys.executable, args: Optional[List[str]] = None) -> Rig:
        rig = Rig(python, args if args is not None else [])
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


GENEROUS = HostConfig(failure_threshold=6)  # no false alarm on a loaded shared machine


def test_agent_registers_and_answers_every_challenge(rig_factory: Any, python: str) -> None:
    rig = rig_factory(python, ["--interval-ms", "100", "--name", "vm-t1",
                               "--corrective-action", "stop", "--probe", "file:{flag}"])
    h = rig.connect(GENEROUS)
    _, sc = h.wait_for(enabled, 15)
    assert (sc.name, sc.interval_ms, sc.corrective_action) == ("vm-t1", 100, "stop")
    h.wait_for(lambda o: isinstance(o, StateChanged) and o.health == "healthy", 5)
    start = time.monotonic()
    while h.count(RoundTrip) < 15:
        assert time.monotonic() - start < 10, rig.agent_log()
        time.sleep(0.05)
    assert h.count(Violation) == 0, h.outputs
    assert h.count(Fault) == 0, h.outputs


def test_file_probe_gone_makes_it_unhealthy_and_back(rig_factory: Any) -> None:
    rig = rig_factory(args=["--interval-ms", "100", "--probe", "file:{flag},period_ms=50"])
    h = rig.connect(GENEROUS)
    h.wait_for(lambda o: isinstance(o, StateChanged) and o.health == "healthy", 15)
    removed = time.monotonic()
    os.unlink(rig.flag)
    t, fault = h.wait_for(lambda o: isinstance(o, Fault), 5)
    assert fault.kind == "unhealthy" and fault.corrective_action == "reboot"
    assert rig.flag in fault.detail
    assert t - removed < 3.0
    open(rig.flag, "w").close()
    h.wait_for(lambda o: isinstance(o, StateChanged) and o.health == "healthy", 5, after=t)
    assert h.count(Fault) == 1


def test_sigterm_sends_exit_and_exits_zero(rig_factory: Any, python: str) -> None:
    rig = rig_factory(python, ["--interval-ms", "100"])
    h = rig.connect(GENEROUS)
    h.wait_for(enabled, 15)
    rig.agent.send_signal(signal.SIGTERM)
    h.wait_for(lambda o: isinstance(o, StateChanged) and o.state == "disabled", 5)
    assert rig.agent.wait(5) == 0
    time.sleep(0.3)
    assert h.count(Fault) == 0, h.outputs


def test_sigstop_is_heartbeat_loss_and_sigcont_recovers(rig_factory: Any, python: str) -> None:
    rig = rig_factory(python, ["--interval-ms", "100"])
    h = rig.connect(HostConfig(failure_threshold=2))
    h.wait_for(enabled, 15)
    time.sleep(0.3)
    stopped = time.monotonic()
    os.kill(rig.agent.pid, signal.SIGSTOP)
    t, fault = h.wait_for(lambda o: isinstance(o, Fault) and o.kind == "heartbeat_loss", 5,
                          after=stopped)
    assert 0.1 <= t - stopped < 2.0  # 2 misses at 100 ms: ~0.2-0.3 s, generous margin
    os.kill(rig.agent.pid, signal.SIGCONT)
    h.wait_for(enabled, 5, after=t)
    # The challenges that piled up during the stall are answered in one batch of
    # which only the newest answer is sent: no flood of stale answers (at most one,
    # if a challenge slipped in between two reads).
    time.sleep(0.3)
    assert h.count(Violation) <= 1, [o for _, o in h.outputs if isinstance(o, Violation)]


def test_host_side_closes_and_returns_agent_registers_again(rig_factory: Any) -> None:
    rig = rig_factory(args=["--interval-ms", "100"])
    h1 = rig.connect(GENEROUS)
    _, sc1 = h1.wait_for(enabled, 15)
    h1.close()  # socat exits and the pty disappears: a hang-up for the agent
    assert rig.socat is not None
    rig.socat.wait(5)
    time.sleep(0.5)  # the agent now finds no device and backs off
    rig.start_socat()
    h2 = rig.connect(GENEROUS)
    _, sc2 = h2.wait_for(enabled, 10)
    assert sc2.invocation_id == sc1.invocation_id  # same agent process, registered again
    while h2.count(RoundTrip) < 5:
        time.sleep(0.05)
    assert rig.agent.poll() is None
    assert h2.count(Fault) == 0
    assert "channel lost" in rig.agent_log()


def test_vote_runs_the_event_script(rig_factory: Any) -> None:
    script = os.path.join(tempfile.gettempdir(), f"nfvha-vote-{os.getpid()}.sh")
    with open(script, "w") as f:
        f.write('#!/bin/sh\necho "$1 $2" >> "$(dirname "$0")/votes.log"\n'
                '[ "$2" = reboot ] && exit 1\nexit 0\n')
    os.chmod(script, 0o755)
    try:
        rig = rig_factory(args=["--interval-ms", "100", "--event-script", script])
        h = rig.connect(GENEROUS)
        h.wait_for(enabled, 15)
        h.send(hb.build_action_notify(sequence=100, invocation_id=7, event_type="reboot",
                                      notification_type="revocable", timeout_ms=3000))
        msg = h.wait_received("action_response", 5)
        assert (msg["invocation_id"], msg["vote_result"]) == (7, "reject")
        assert hb.validate(msg) is None
    finally:
        os.unlink(script)


def test_garbage_from_host_does_not_stop_the_agent(rig_factory: Any) -> None:
    rig = rig_factory(args=["--interval-ms", "100"])
    h = rig.connect(GENEROUS)
    h.wait_for(enabled, 15)
    h.sock.sendall(b"\xff\xfe garbage\n" + b"x" * 100_000 + b"\n[1,2]\n{\"msg_type\":\"nope\"}\n")
    before = h.count(RoundTrip)
    end = time.monotonic() + 10
    while h.count(RoundTrip) < before + 5:
        assert time.monotonic() < end, rig.agent_log()
        time.sleep(0.05)
    assert rig.agent.poll() is None
    assert h.count(Fault) == 0
    # Three bad frames (non-UTF-8, oversized, not an object), one rate-limited log line.
    assert rig.agent_log().count("dropped a malformed frame") == 1
