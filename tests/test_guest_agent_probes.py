"""Guest agent probes: spec parsing and each kind against real targets."""
from __future__ import annotations

import asyncio
import http.server
import os
import socket
import threading
import time
from typing import Any, Iterator

import pytest

from nfvha.guest import probes
from nfvha.guest.probes import Probe, ProbeSpecError, check_once, parse_probe


@pytest.mark.parametrize(
    "spec, kind, target, period, timeout",
    [
        ("file:/tmp/x", "file", "/tmp/x", 100, 100),
        ("tcp:127.0.0.1:80", "tcp", "127.0.0.1:80", 1000, 1000),
        ("http:127.0.0.1:8080/health", "http", "http://127.0.0.1:8080/health", 1000, 1000),
        ("http:https://h/x?a=1", "http", "https://h/x?a=1", 1000, 1000),
        ("exec:/bin/true", "exec", "/bin/true", 10000, 5000),
        ("exec:sh -c 'a,b',timeout_ms=50,period_ms=70", "exec", "sh -c 'a,b'", 70, 50),
        ("file:/a,b,period_ms=20", "file", "/a,b", 20, 100),
    ],
)
def test_parse_probe(spec: str, kind: str, target: str, period: int, timeout: int) -> None:
    p = parse_probe(spec)
    assert (p.kind, p.target, p.period_ms, p.timeout_ms) == (kind, target, period, timeout)


@pytest.mark.parametrize("spec", ["", "x:y", "file:", "tcp:host", "tcp:host:99999", "tcp::80",
                                  "exec:", "exec:'unclosed", "file:/x,period_ms=0",
                                  "http:"])
def test_parse_probe_rejects(spec: str) -> None:
    with pytest.raises(ProbeSpecError):
        parse_probe(spec)


async def test_exec_probe_exit_status_and_timeout() -> None:
    assert await check_once(parse_probe("exec:/bin/true")) == (True, "")
    ok, msg = await check_once(parse_probe("exec:sh -c 'echo boom >&2; exit 3'"))
    assert not ok and "exited 3" in msg and "boom" in msg
    start = time.monotonic()
    ok, msg = await check_once(parse_probe("exec:sleep 30,timeout_ms=200"))
    assert not ok and "timed out" in msg
    assert time.monotonic() - start < 5  # the sleeper was killed, not waited for
    ok, msg = await check_once(parse_probe("exec:/nonexistent/cmd"))
    assert not ok and "error" in msg


async def test_tcp_probe_open_and_closed_port() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    try:
        assert await check_once(parse_probe(f"tcp:127.0.0.1:{port}")) == (True, "")
    finally:
        server.close()
    ok, msg = await check_once(parse_probe(f"tcp:127.0.0.1:{port}"))
    assert not ok and msg


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        code = int(self.path.strip("/") or "200")
        self.send_response(code)
        if 300 <= code < 400:
            self.send_header("Location", "/500")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("code, healthy", [(200, True), (204, True), (302, True), (404, False),
                                           (500, False), (503, False)])
async def test_http_probe_status_classes(http_port: int, code: int, healthy: bool) -> None:
    ok, msg = await check_once(parse_probe(f"http:http://127.0.0.1:{http_port}/{code}"))
    assert ok is healthy
    if not healthy:
        assert str(code) in msg


async def test_http_probe_connection_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ok, msg = await check_once(parse_probe(f"http:127.0.0.1:{port}/"))
    assert not ok and msg


async def test_file_probe(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "flag")
    assert (await check_once(parse_probe(f"file:{path}")))[0] is False
    open(path, "w").close()
    assert await check_once(parse_probe(f"file:{path}")) == (True, "")


async def test_python_probe_results_exceptions_and_hangs() -> None:
    assert await check_once(probes.python_probe(lambda: True)) == (True, "")
    assert await check_once(probes.python_probe(lambda: (False, "db down"))) == (False, "db down")
    assert (await check_once(probes.python_probe(lambda: 0, name="zero")))[0] is False

    def broken() -> bool:
        raise RuntimeError("kaput")

    ok, msg = await check_once(probes.python_probe(broken))
    assert not ok and "RuntimeError" in msg and "kaput" in msg

    release = threading.Event()
    hung = probes.python_probe(lambda: release.wait(10), name="hung", timeout_ms=100)
    ok, msg = await check_once(hung)
    assert not ok and "timed out" in msg
    ok, msg = await check_once(hung)  # never a second thread while the first still runs
    assert not ok and "still running" in msg
    release.set()
    await asyncio.sleep(0.1)
    assert await check_once(hung) == (True, "")


async def test_run_forever_caches_and_reports_changes(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "flag")
    open(path, "w").close()
    probe = parse_probe(f"file:{path},period_ms=20")
    changes = []
    task = asyncio.ensure_future(probes.run_forever(probe, lambda p: changes.append(p.result)))
    try:
        await asyncio.sleep(0.1)
        assert probe.result == (True, "") and probe.runs >= 3
        os.unlink(path)
        await asyncio.sleep(0.1)
        assert probe.result[0] is False
        assert [c[0] for c in changes] == [True, False]  # first result, then one change
    finally:
        task.cancel()


def test_summarize_joins_failures_and_unrun_probes_pass() -> None:
    a, b, c = Probe("file", "/a", 1, 1), Probe("file", "/b", 1, 1), Probe("file", "/c", 1, 1)
    assert probes.summarize([a, b, c]) == (True, "")  # nothing ran yet: no false alarm
    b.result = (False, "/b is missing")
    c.result = (False, "")
    assert probes.summarize([a, b, c]) == (False, "/b is missing; file:/c")
