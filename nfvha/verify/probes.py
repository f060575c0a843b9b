"""Probes: sample a service on persistent connections every few ms.

Yardstick spawned a CLI per check (2–10 s resolution). Here each probe keeps
its connection open, paces itself on the monotonic clock (next start =
previous start + interval, never drifting) and timestamps every sample with
`time.monotonic()`. A failure never stops a probe: it records a failed
sample, drops the connection and reconnects on the next tick.
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from typing import Any, Awaitable, Callable, Collection, Optional

from .timeline import Record, Sample

OnChange = Callable[[bool, float, str], None]


class Probe:
    name = "probe"
    interval = 0.005
    # Open loop: start a sample every interval even while earlier ones hang
    # (a connect into a black hole must not blind the probe for its timeout).
    open_loop = False
    max_in_flight = 64

    async def once(self) -> Sample:  # pragma: no cover - interface
        raise NotImplementedError

    async def run(self, record: Record, stop: asyncio.Event,
                  on_change: Optional[OnChange] = None) -> None:
        """Samples until `stop` is set; calls on_change(ok, t, detail) on each flip."""
        if self.open_loop:
            await self._run_open(record, stop, on_change)
            return
        last: Optional[bool] = None
        nxt = time.monotonic()
        try:
            while not stop.is_set():
                s = await self.once()
                record.add(s)
                if on_change is not None and s.ok != last:
                    on_change(s.ok, s.t, s.detail)
                last = s.ok
                nxt += self.interval
                delay = nxt - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    nxt = time.monotonic()   # fell behind: don't burst to catch up
                    await asyncio.sleep(0)
        finally:
            await self.close()

    async def _run_open(self, record: Record, stop: asyncio.Event,
                        on_change: Optional[OnChange]) -> None:
        pending: set = set()
        state = {"last": None}

        def done(task: asyncio.Task) -> None:
            pending.discard(task)
            if task.cancelled() or task.exception() is not None:
                return
            s = task.result()
            record.add(s)
            if on_change is not None and s.ok != state["last"]:
                on_change(s.ok, s.t, s.detail)
            state["last"] = s.ok

        nxt = time.monotonic()
        try:
            while not stop.is_set():
                if len(pending) < self.max_in_flight:
                    task = asyncio.create_task(self.once())
                    pending.add(task)
                    task.add_done_callback(done)
                nxt += self.interval
                delay = nxt - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    nxt = time.monotonic()
                    await asyncio.sleep(0)
            if pending:
                await asyncio.wait(list(pending), timeout=5)
        finally:
            for task in list(pending):
                task.cancel()
            await self.close()

    async def close(self) -> None:
        pass


class HttpProbe(Probe):
    """GET on one keep-alive HTTP/1.1 connection; 2xx/3xx/4xx = ok, 5xx or error = failed."""

    def __init__(self, host: str, port: int, path: str = "/", *, interval: float = 0.005,
                 timeout: float = 1.0, name: str = "http",
                 sock_factory: Optional[Callable[[], Any]] = None,
                 open_loop: bool = False, method: str = "GET", body: bytes = b"",
                 content_type: str = "application/json",
                 expect: Optional[Collection[int]] = None,
                 expect_header: Optional[str] = None, fail_at_end: bool = False) -> None:
        """`sock_factory` makes the (unconnected) socket, e.g. one that lives in a
        client network namespace (netns.ns_socket) to reach a VIP there.
        `open_loop`: a fresh connection per request, one started every interval
        whatever the earlier ones do (for HTTP/1.0 services and black holes).
        `method`/`body`: e.g. a POST of a token request; `expect`: the statuses
        that count as ok (default: any below 500), `expect_header`: a header
        an ok answer must carry (e.g. X-Subject-Token). `fail_at_end`: a failed
        sample is timed when the failure came back, not at the request's middle
        (a slow request in flight at a kill fails after it: at its middle it
        could fall before the fault and count in no outage)."""
        self.host, self.port, self.path = host, port, path
        self.interval, self.timeout, self.name = interval, timeout, name
        self.sock_factory = sock_factory
        self.open_loop = open_loop
        self.expect = None if expect is None else frozenset(expect)
        self.expect_header = expect_header.lower() if expect_header else None
        self.fail_at_end = fail_at_end
        self._conn: Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = None
        extra = (f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                 if body or method != "GET" else "")
        self._req = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"User-Agent: nfvha-verify\r\n{extra}\r\n").encode() + body

    def _ok(self, status: int) -> bool:
        return status < 500 if self.expect is None else status in self.expect

    async def once(self) -> Sample:
        t0 = time.monotonic()
        own: list = []
        try:
            status, served = await asyncio.wait_for(self._request(own), self.timeout)
            ok = self._ok(status) and served is not None
            detail = served if ok and served is not None else \
                f"HTTP {status} {served if served is not None else 'no ' + str(self.expect_header)}"
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as exc:
            if not self.open_loop:
                await self.close()
            ok, detail = False, type(exc).__name__ + (f": {exc}" if str(exc) else "")
            if isinstance(exc, asyncio.TimeoutError):
                # Never answered: the service was failing when the request left,
                # not half a timeout later.
                t1 = time.monotonic()
                return Sample(t0, False, 1000.0 * (t1 - t0), self.name, detail[:80])
        finally:
            for w in own:          # open loop: each request's own connection
                w.close()
        t1 = time.monotonic()
        t = t1 if self.fail_at_end and not ok else (t0 + t1) / 2
        return Sample(t, ok, 1000.0 * (t1 - t0), self.name, detail[:80])

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.sock_factory is None:
            return await asyncio.open_connection(self.host, self.port)
        sock = self.sock_factory()
        if asyncio.iscoroutine(sock):
            sock = await sock
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _request(self, own: list) -> tuple[int, Optional[str]]:
        if self.open_loop:
            reader, writer = await self._connect()
            own.append(writer)
        else:
            if self._conn is None:
                self._conn = await self._connect()
            reader, writer = self._conn
        writer.write(self._req)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"bad status line {lines[0][:40]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        conn = headers.get("connection", "").lower()
        if not self.open_loop and (conn == "close" or
                                   (parts[0] == "HTTP/1.0" and conn != "keep-alive")):
            await self.close()        # e.g. python's http.server: one request per connection
        if self.expect_header is not None and not headers.get(self.expect_header):
            return status, None
        served = headers.get("x-served-by") or body[:24].decode("latin-1").strip()
        return status, served

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


class ParallelProbe(Probe):
    """`probes` run side by side as one probe (their samples all named `name`):
    several clients, each closed loop on its own connection, so a slow request
    (a token costs a Keystone ~0.1 s) does not leave the timeline unsampled."""

    def __init__(self, probes: list, name: str = "http") -> None:
        self.probes, self.name = list(probes), name
        for p in self.probes:
            p.name = name

    @property
    def interval(self) -> float:          # type: ignore[override]
        return self.probes[0].interval

    async def once(self) -> Sample:
        return await self.probes[0].once()

    async def run(self, record: Record, stop: asyncio.Event,
                  on_change: Optional[OnChange] = None) -> None:
        await asyncio.gather(*(p.run(record, stop, on_change) for p in self.probes))

    async def close(self) -> None:
        for p in self.probes:
            await p.close()


class TcpProbe(Probe):
    """A fresh TCP connect per sample: is something accepting on host:port?"""

    def __init__(self, host: str, port: int, *, interval: float = 0.01, timeout: float = 0.5,
                 name: str = "tcp") -> None:
        self.host, self.port, self.interval, self.timeout, self.name = (
            host, port, interval, timeout, name)

    async def once(self) -> Sample:
        t0 = time.monotonic()
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                          self.timeout)
            w.close()
            ok, detail = True, "connected"
        except (OSError, asyncio.TimeoutError) as exc:
            ok, detail = False, type(exc).__name__
        t1 = time.monotonic()
        return Sample((t0 + t1) / 2, ok, 1000.0 * (t1 - t0), self.name, detail)


class NamespaceSockets:
    """Makes sockets that live in network namespace `netns` (e.g. a client
    namespace from which a VIP is reachable), for `HttpProbe(sock_factory=...)`.

    One worker thread joins the namespace once (setns affects only the calling
    thread) and then creates sockets on request: no thread per sample.
    """

    def __init__(self, netns: str) -> None:
        import concurrent.futures
        self.netns = netns
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, initializer=_join_netns, initargs=(netns,),
            thread_name_prefix=f"netns-{netns}")

    async def __call__(self) -> socket.socket:
        return await asyncio.get_running_loop().run_in_executor(self._pool, socket.socket)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _join_netns(netns: str) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{netns}") as f:
        if libc.setns(f.fileno(), 0x40000000) != 0:      # CLONE_NEWNET
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (a killed child not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


class ProcessProbe(Probe):
    """Process presence: `pid_of()` names the current pid (it changes on restart)."""

    def __init__(self, pid_of: Callable[[], Optional[int]], *, interval: float = 0.01,
                 name: str = "process") -> None:
        self.pid_of, self.interval, self.name = pid_of, interval, name

    async def once(self) -> Sample:
        t0 = time.monotonic()
        pid = self.pid_of()
        ok = pid is not None and pid_alive(pid)
        t1 = time.monotonic()
        return Sample((t0 + t1) / 2, ok, 1000.0 * (t1 - t0), self.name, f"pid {pid}")


class AmqpProbe(Probe):
    """AMQP publish → consume round trip through a real broker (py-amqp, in a thread:
    the library is blocking). One sample per message; a message not back
    within `timeout` is a failed (lost) sample."""

    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672//", *,
                 queue: Optional[str] = None, interval: float = 0.01, timeout: float = 1.0,
                 name: str = "amqp") -> None:
        self.url, self.interval, self.timeout, self.name = url, interval, timeout, name
        self.queue = queue or f"nfvha-verify-{uuid.uuid4().hex[:8]}"
        self._conn = None
        self._ch = None
        self._lock = threading.Lock()

    def _connect(self) -> None:
        from urllib.parse import urlsplit

        import amqp  # kombu's transport, installed with oslo.messaging
        u = urlsplit(self.url)
        conn = amqp.Connection(host=f"{u.hostname}:{u.port or 5672}", userid=u.username or "guest",
                               password=u.password or "guest", connect_timeout=self.timeout)
        conn.connect()
        ch = conn.channel()
        ch.queue_declare(self.queue, auto_delete=True)
        self._conn, self._ch = conn, ch

    def _roundtrip(self) -> str:
        import amqp
        with self._lock:
            if self._ch is None:
                self._connect()
            token = uuid.uuid4().hex
            self._ch.basic_publish(amqp.Message(token), routing_key=self.queue)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                msg = self._ch.basic_get(self.queue, no_ack=True)
                if msg is not None and msg.body in (token, token.encode()):
                    return "ok"
                if msg is None:
                    time.sleep(0.0005)
            raise TimeoutError("message not back")

    async def once(self) -> Sample:
        t0 = time.monotonic()
        try:
            detail = await asyncio.to_thread(self._roundtrip)
            ok = True
        except Exception as exc:   # broker errors come in many classes; all mean "failed"
            ok, detail = False, type(exc).__name__
            await asyncio.to_thread(self._drop)
        t1 = time.monotonic()
        return Sample((t0 + t1) / 2, ok, 1000.0 * (t1 - t0), self.name, detail)

    def _drop(self) -> None:
        with self._lock:
            try:
                if self._conn is not None:
                    self._conn.close()
            except Exception:  # closing a broken connection may itself fail
                pass
            self._conn = self._ch = None

    async def close(self) -> None:
        await asyncio.to_thread(self._drop)


async def wait_until(pred: Callable[[], Awaitable[bool]], timeout: float,
                     step: float = 0.01) -> bool:
    """Polls an async predicate; True as soon as it holds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await pred():
            return True
        await asyncio.sleep(step)
    return False


async def warm_up(probe: Probe, need: int = 10, timeout: float = 10.0,
                  step: float = 0.01) -> None:
    """The probe succeeds `need` times in a row (or `timeout` passes) before a
    scenario's baseline starts: ARP, bridge learning, the service's first
    accept are not counted as an outage."""
    end = time.monotonic() + timeout
    row = 0
    while row < need and time.monotonic() < end:
        row = row + 1 if (await probe.once()).ok else 0
        await asyncio.sleep(step)


def env_interval(default: float) -> float:
    """Probe period override for slow machines: NFVHA_VERIFY_INTERVAL_MS."""
    v = os.environ.get("NFVHA_VERIFY_INTERVAL_MS")
    return float(v) / 1000.0 if v else default
