"""In-guest library over a real pty (socat stands in for QEMU's virtio-serial
chardev, docs/protocol.md): Python API, local socket API, CLI, shell example."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nfvha.guest import group
from nfvha.protocol import sgsession, sgwire
from nfvha.protocol.framing import FrameError, LineDecoder, encode
from tests.conftest import require_command

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = [{"instance_name": "instance-a", "state": "active"},
           {"instance_name": "instance-b", "state": "error"}]


class FakeHost:
    """The compute side of one guest's channel, driven by the real session machine."""

    def __init__(self, path: str, instance: str = "instance-a") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.state = sgsession.session(sgsession.SessionConfig(instance=instance))
        self.to_controller: list = []
        self.violations: list = []
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def send(self, app: dict) -> None:
        self.state, outs = sgsession.session_step(self.state, sgsession.Deliver(app),
                                                  time.monotonic())
        for o in outs:
            self.sock.sendall(encode(o.msg))

    def _run(self) -> None:
        dec = LineDecoder()
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            for item in dec.feed(data):
                ev = sgsession.Malformed(item.reason) if isinstance(item, FrameError) else \
                    sgsession.Received(item)
                self.state, outs = sgsession.session_step(self.state, ev, time.monotonic())
                for o in outs:
                    if isinstance(o, sgsession.Send):
                        self.sock.sendall(encode(o.msg))
                    elif isinstance(o, sgsession.Violation):
                        self.violations.append(o.reason)
                    elif isinstance(o, sgsession.ToController):
                        with self.lock:
                            self.to_controller.append((o.kind, o.payload))
                        if o.kind == "status_query":
                            seq = o.payload["seq"]
                            for m in MEMBERS:
                                self.send(sgwire.status_response(seq, m))
                            self.send(sgwire.status_response_done(seq))

    def wait_for(self, n: int, timeout: float = 10.0) -> list:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.to_controller) >= n:
                    return list(self.to_controller)
            time.sleep(0.01)
        raise AssertionError(f"host got {self.to_controller}")

    def close(self) -> None:
        self.stop = True
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def channel(tmp_path):
    require_command("socat")
    sock, dev = str(tmp_path / "cgcs.messaging.instance-a.sock"), str(tmp_path / "vport")
    proc = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock}", f"PTY,link={dev},raw,echo=0"],
                            stderr=subprocess.DEVNULL)
    try:
        host = FakeHost(sock)
        end = time.monotonic() + 10
        while not os.path.exists(dev):
            assert time.monotonic() < end, "socat made no pty"
            time.sleep(0.02)
        yield host, dev
        host.close()
    finally:
        proc.terminate()
        proc.wait(5)


def test_broadcast_status_and_callbacks_over_the_port(channel):
    host, dev = channel
    with group.GroupClient(dev) as c:
        c.broadcast("hello group")
        assert host.wait_for(1)[0] == ("broadcast", {"source_instance": "instance-a",
                                                     "data": "hello group"})
        assert c.status(timeout=5) == MEMBERS
        got_b, got_n = [], []
        c.on_broadcast(lambda src, data: got_b.append((src, data)))
        c.on_notification(got_n.append)
        host.send(sgwire.broadcast_to_guest("from b", "instance-b"))
        note = {"payload": {"instance_id": "ub", "state": "error"},
                "event_type": "compute.instance.update", "priority": "INFO", "timestamp": "t"}
        host.send(sgwire.notification(note))
        events = []
        end = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < end:
            events += c.poll(0.2)
        assert events == [{"type": "broadcast", "source_instance": "instance-b",
                           "data": "from b"}, {"type": "notification", "data": note}]
        assert got_b == [("instance-b", "from b")] and got_n == [note]


def test_oversized_or_newline_broadcast_is_refused_locally(channel):
    host, dev = channel
    with group.GroupClient(dev) as c:
        with pytest.raises(group.GroupError, match="3051 bytes"):
            c.broadcast("x" * 3051)
        with pytest.raises(group.GroupError, match="newline"):
            c.broadcast("a\nb")
        c.broadcast("x" * 3050)
        assert host.wait_for(1)[0][1]["data"] == "x" * 3050


def test_status_timeout_raises_when_host_never_answers(channel):
    host, dev = channel
    host.stop = True  # the host stops reading: no answer will come
    host.thread.join(2)
    with group.GroupClient(dev) as c:
        t0 = time.monotonic()
        with pytest.raises(group.GroupTimeout) as exc:
            c.status(timeout=0.3)
        assert exc.value.members == []
        assert time.monotonic() - t0 < 5


def test_nack_from_host_reaches_on_nack(channel):
    host, dev = channel
    with group.GroupClient(dev) as c:
        nacks = []
        c.on_nack(lambda orig, log: nacks.append((orig, log)))
        # a raw malformed line written straight to the port: the host nacks it
        os.write(c.fileno(), b"\n{garbage\n")
        end = time.monotonic() + 5
        while not nacks and time.monotonic() < end:
            c.poll(0.1)
        assert nacks == [("unknown", "malformed message: invalid-json")]


def test_missing_device_gives_clear_error(tmp_path):
    with pytest.raises(group.GroupError, match="cannot open"):
        group.GroupClient(str(tmp_path / "nope")).broadcast("x")


def _serve(server, stop):
    server.start()
    t = threading.Thread(target=server.serve, args=(stop.is_set,), daemon=True)
    t.start()
    return t


def _lines(sock, n, timeout=5.0):
    sock.settimeout(timeout)
    f = sock.makefile("rb")
    return [json.loads(f.readline()) for _ in range(n)]


def test_socket_api_broadcast_status_subscribe_and_junk(channel, tmp_path):
    host, dev = channel
    path = str(tmp_path / "run" / "group.sock")
    client = group.GroupClient(dev)
    server = group.GroupSocketServer(client, path)
    stop = threading.Event()
    t = _serve(server, stop)
    try:
        app = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        app.connect(path)
        sub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sub.connect(path)
        sub.sendall(b'{"op":"subscribe"}\n')
        assert _lines(sub, 1) == [{"ok": True}]
        app.sendall(b'{"op":"broadcast","data":"via socket","id":1}\n'
                    b'{"op":"status","id":2}\n'
                    b'not json\n'
                    b'{"op":"fly"}\n'
                    b'{"op":"broadcast","data":"' + b"y" * 3051 + b'"}\n'
                    b'{"op":"status","timeout":"soon"}\n')
        replies = _lines(app, 6)
        assert replies[0] == {"ok": True, "id": 1}
        status = [r for r in replies if r.get("id") == 2][0]
        assert status["members"] == MEMBERS and status["complete"] is True
        errors = [r for r in replies if r.get("ok") is False]
        assert len(errors) == 4 and all(r["error"] for r in errors)
        assert any("3051" in r["error"] for r in errors)
        assert host.wait_for(1)[0][1]["data"] == "via socket"
        host.send(sgwire.broadcast_to_guest("to subscribers", "instance-b"))
        assert _lines(sub, 1) == [{"type": "broadcast", "source_instance": "instance-b",
                                   "data": "to subscribers"}]
        # oversized request line: error reply, the connection keeps working
        app.sendall(b"x" * 20000 + b'\n{"op":"subscribe"}\n')
        r1, r2 = _lines(app, 2)
        assert r1["ok"] is False and "oversized" in r1["error"] and r2 == {"ok": True}
    finally:
        stop.set()
        t.join(5)
        server.close()
        client.close()
    assert not os.path.exists(path)


def test_slow_subscriber_is_dropped_without_blocking_others(channel, tmp_path):
    host, dev = channel
    path = str(tmp_path / "group.sock")
    client = group.GroupClient(dev)
    server = group.GroupSocketServer(client, path)
    stop = threading.Event()
    t = _serve(server, stop)
    try:
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(path)
        slow.sendall(b'{"op":"subscribe"}\n')
        fast = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fast.connect(path)
        fast.sendall(b'{"op":"subscribe"}\n')
        assert _lines(fast, 1) == [{"ok": True}]
        big = "z" * 3000
        f = fast.makefile("rb")
        fast.settimeout(10)
        got = 0
        # ~1.2 MB to a reader that never reads, in batches of 40 (~120 kB) that
        # the fast reader takes before the next: it is never near the limit,
        # however slowly a loaded machine runs the server thread.
        for batch in range(10):
            for _ in range(40):
                host.send(sgwire.broadcast_to_guest(big, "instance-b"))
            while got < 40 * (batch + 1):
                line = f.readline()
                assert line, f"the fast subscriber was dropped after {got} broadcasts"
                got += json.loads(line).get("type") == "broadcast"
        assert got == 400
        end = time.monotonic() + 5
        while len(server._conns) > 1 and time.monotonic() < end:
            time.sleep(0.05)
        assert len(server._conns) == 1  # the slow one was dropped
    finally:
        stop.set()
        t.join(5)
        server.close()
        client.close()


def test_cli_broadcast_status_listen_through_socket(channel, tmp_path):
    host, dev = channel
    path = str(tmp_path / "group.sock")
    client = group.GroupClient(dev)
    server = group.GroupSocketServer(client, path)
    stop = threading.Event()
    t = _serve(server, stop)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = [sys.executable, "-m", "nfvha.guest"]  # the real nfvha-guest entry point
    try:
        r = subprocess.run(cli + ["group", "--socket", path, "broadcast", "from cli"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert host.wait_for(1)[0][1]["data"] == "from cli"
        r = subprocess.run(cli + ["group", "--socket", path, "status"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert [json.loads(x) for x in r.stdout.splitlines()] == MEMBERS
        listen = subprocess.Popen(cli + ["group", "--socket", path, "listen", "--count", "1"],
                                  env=env, stdout=subprocess.PIPE, text=True)
        end = time.monotonic() + 20
        while sum(c.subscribed for c in server._conns.values()) < 1:
            assert time.monotonic() < end
            time.sleep(0.05)
        host.send(sgwire.broadcast_to_guest("for listen", "instance-b"))
        out, _ = listen.communicate(timeout=20)
        assert json.loads(out) == {"type": "broadcast", "source_instance": "instance-b",
                                   "data": "for listen"}
        r = subprocess.run(cli + ["group", "--socket", path, "broadcast", "a" * 4000],
                           env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "4000 bytes" in r.stderr
    finally:
        stop.set()
        t.join(5)
        server.close()
        client.close()


def test_shell_example_uses_the_socket_api(channel, tmp_path):
    host, dev = channel
    require_command("socat")
    path = str(tmp_path / "group.sock")
    client = group.GroupClient(dev)
    server = group.GroupSocketServer(client, path)
    stop = threading.Event()
    t = _serve(server, stop)
    try:
        env = dict(os.environ, NFVHA_GROUP_SOCKET=path)
        r = subprocess.run(["sh", str(ROOT / "examples" / "group.sh"), "broadcast", "from sh"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"ok": True}
        assert host.wait_for(1)[0][1]["data"] == "from sh"
        r = subprocess.run(["sh", str(ROOT / "examples" / "group.sh"), "status"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert json.loads(r.stdout)["members"] == MEMBERS
    finally:
        stop.set()
        t.join(5)
        server.close()
        client.close()


def test_add_group_parser_shape():
    p = argparse.ArgumentParser()
    s = p.add_subparsers()
    group.add_group_parser(s)
    a = p.parse_args(["group", "status", "--timeout", "2"])
    assert a.group_cmd == "status" and a.timeout == 2.0 and a.func is group.group_main


def test_library_runs_on_python38(channel):
    """The guest library must run on the oldest supported guest Python."""
    import glob
    import shutil

    candidates = [os.environ.get("NFVHA_PYTHON38"), shutil.which("python3.8"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))]
    py38 = next((c for c in candidates if c and subprocess.run(
        [c, "--version"], capture_output=True).returncode == 0), None)
    if py38 is None:
        pytest.skip("no working python3.8")
    host, dev = channel
    code = ("import json,sys; from nfvha.guest.group import GroupClient;"
            f"c=GroupClient({dev!r}); c.broadcast('from 3.8');"
            "print(json.dumps(c.status(5)))")
    r = subprocess.run([py38, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == MEMBERS
    assert host.wait_for(1)[0][1]["data"] == "from 3.8"
