"""The pieces the keystone scenario adds to the harness, on real sockets and
processes: a POST probe that counts only the expected answer, failures timed
when they came back, several clients as one probe, and kill -9 of a process
with its children (a WSGI master and its worker)."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from nfvha.verify.attackers import KillProcess
from nfvha.verify.probes import HttpProbe, ParallelProbe, pid_alive
from nfvha.verify.timeline import Record


async def _server(handler) -> tuple[asyncio.AbstractServer, int]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def _read_request(r: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await r.readuntil(b"\r\n\r\n")).decode()
    length = next((int(h.split(":")[1]) for h in head.split("\r\n")
                   if h.lower().startswith("content-length:")), 0)
    return head.split("\r\n")[0], await r.readexactly(length)


def test_post_probe_sends_the_body_and_counts_only_the_expected_answer():
    seen = []

    async def handler(r, w):
        try:
            while True:
                line, body = await _read_request(r)
                seen.append((line, body))
                if body == b'{"ok": 1}':
                    w.write(b"HTTP/1.1 201 Created\r\nX-Subject-Token: t\r\nX-Served-By: s1\r\n"
                            b"Content-Length: 0\r\n\r\n")
                elif body == b'{"no-token": 1}':
                    w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    async def go():
        srv, port = await _server(handler)
        out = []
        for body in (b'{"ok": 1}', b'{"no-token": 1}', b'{"bad": 1}'):
            p = HttpProbe("127.0.0.1", port, "/v3/auth/tokens", method="POST", body=body,
                          expect=(201,), expect_header="X-Subject-Token")
            out.append(await p.once())
            await p.close()
        srv.close()
        return out

    ok, no_token, unauthorized = asyncio.run(go())
    assert seen[0] == ("POST /v3/auth/tokens HTTP/1.1", b'{"ok": 1}')
    assert ok.ok and ok.detail == "s1"
    assert not no_token.ok and "no x-subject-token" in no_token.detail
    # a 401 is below 500 but not the expected answer: a failure here
    assert not unauthorized.ok and unauthorized.detail.startswith("HTTP 401")


def test_a_failure_is_timed_when_it_came_back_with_fail_at_end():
    async def handler(r, w):
        await _read_request(r)
        await asyncio.sleep(0.3)        # in flight, then the server dies
        w.transport.abort()

    async def go():
        srv, port = await _server(handler)
        out = []
        for at_end in (False, True):
            p = HttpProbe("127.0.0.1", port, timeout=2.0, fail_at_end=at_end)
            t0 = time.monotonic()
            s = await p.once()
            out.append((s, t0, time.monotonic()))
            await p.close()
        srv.close()
        return out

    (mid, t0, _), (end, t0b, t1b) = asyncio.run(go())
    assert not mid.ok and not end.ok
    assert mid.t < t0 + 0.25               # the middle of a ~0.3 s request
    assert end.t >= t0b + 0.29 and end.t <= t1b


def test_parallel_clients_sample_side_by_side_as_one_probe():
    async def handler(r, w):
        try:
            while True:
                await _read_request(r)
                await asyncio.sleep(0.1)    # a slow request, as a token is
                w.write(b"HTTP/1.1 200 OK\r\nX-Served-By: s\r\nContent-Length: 0\r\n\r\n")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    async def go():
        srv, port = await _server(handler)
        probe = ParallelProbe([HttpProbe("127.0.0.1", port, interval=0.01) for _ in range(4)])
        rec, stop = Record("x", time.monotonic()), asyncio.Event()
        task = asyncio.create_task(probe.run(rec, stop))
        await asyncio.sleep(1.0)
        stop.set()
        await task
        srv.close()
        return rec

    rec = asyncio.run(go())
    assert {s.probe for s in rec.samples} == {"http"}
    # one client alone gets ~10 answers a second; four side by side ~40
    assert len(rec.samples) >= 25, len(rec.samples)


def test_kill_tree_kills_the_process_and_its_children():
    code = ("import subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(c.pid, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        attacker = KillProcess(parent.pid, tree=True)
        asyncio.run(attacker.inject())
        assert attacker.killed == [parent.pid, child]
        assert parent.wait(10) == -9
        end = time.monotonic() + 10         # the orphan is reaped by whoever adopted it
        while pid_alive(child) and time.monotonic() < end:
            time.sleep(0.02)
        assert not pid_alive(child)
        assert "and its descendants" in attacker.describe()
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
