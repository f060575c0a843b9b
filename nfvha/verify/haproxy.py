"""HAProxy (Debian's) as a direct child, and its stats socket read at ≤ 10 ms.

The load balancer of the active/active scenario: one frontend on
127.0.0.1, one backend of N servers, health checks `inter 100 fall 2 rise 2`
(or none, for the variant that must fail), `option redispatch` and
`retries`. Logs go to stdout (`log stdout format raw`), which we read: a
"Server be/s2 is DOWN" line there is the alarm HAProxy raises.
"""
from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

STATE_RE = re.compile(r"Server (\S+)/(\S+) is (DOWN|UP)\b")


@dataclass(frozen=True)
class HaproxyConfig:
    """One frontend, one backend; also the load balancers of the tc053 pair
    (deploy/haproxy_vrrp.py: bound to every address, servers on the nodes'
    addresses, the answer's X-Served-By naming the load balancer)."""

    port: int
    servers: Sequence[Tuple[str, int]]            # (name, port) on `server_host`
    checks: bool = True
    inter_ms: int = 100
    fall: int = 2
    rise: int = 2
    retries: int = 3
    redispatch: bool = True
    check_path: str = "/"
    bind: str = "127.0.0.1"
    backend: str = "be"
    # a server's address by name; a name not in it is on 127.0.0.1
    server_host: Tuple[Tuple[str, str], ...] = ()
    # appended to the backend's X-Served-By header: "<served by> via <served_via>"
    served_via: Optional[str] = None
    # X-Served-By set to the server's name by HAProxy itself, for services
    # that do not say who they are (Keystone)
    name_server: bool = False

    def render(self, stats_socket: Optional[str] = None) -> str:
        """The config text; with a `stats_socket` path, an admin socket there."""
        check = f" check inter {self.inter_ms} fall {self.fall} rise {self.rise}" if self.checks \
            else ""
        host = dict(self.server_host)
        servers = "\n".join(f"    server {n} {host.get(n, '127.0.0.1')}:{p}{check}"
                             for n, p in self.servers)
        stats = "" if stats_socket is None else \
            f"    stats socket {stats_socket} mode 600 level admin\n"
        via = "" if self.served_via is None else \
            ('    http-response set-header X-Served-By '
             f'"%[res.hdr(X-Served-By)] via {self.served_via}"\n')
        if self.name_server:
            via = "    http-response set-header X-Served-By %[srv_name]\n" + via
        return f"""\
global
{stats}    log stdout format raw local0 info
    maxconn 2000

defaults
    mode http
    log global
    option dontlog-normal
    timeout connect 500ms
    timeout client 10s
    timeout server 10s
    timeout check 500ms
    retries {self.retries}
{"    option redispatch 1" if self.redispatch else ""}

frontend fe
    bind {self.bind}:{self.port}
    no log
    default_backend {self.backend}

backend {self.backend}
    balance roundrobin
{f"    option httpchk GET {self.check_path}" if self.checks else ""}
{via}{servers}
"""


@dataclass(frozen=True)
class ServerStat:
    name: str
    status: str          # UP, DOWN, "UP 1/2", "DOWN 1/2", "no check", MAINT
    econ: int            # connection errors
    wretr: int           # retries
    wredis: int          # redispatches
    stot: int            # sessions sent to it

    @property
    def state(self) -> str:
        """What HAProxy acts on: "UP 1/2" (going down) is still UP, "DOWN 1/2" still DOWN."""
        return self.status.split(" ")[0] if self.status else ""


def parse_show_stat(text: str, backend: str = "be") -> Dict[str, ServerStat]:
    lines = text.lstrip("# ").splitlines()
    out: Dict[str, ServerStat] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue

        n = {k: int(row.get(k) or 0) for k in ("econ", "wretr", "wredis", "stot")}
        out[row["svname"]] = ServerStat(row["svname"], row.get("status", ""), **n)
    return out


async def stats_command(sock_path: str, command: str, timeout: float = 1.0) -> str:
    r, w = await asyncio.wait_for(asyncio.open_unix_connection(sock_path), timeout)
    try:
        w.write(command.encode() + b"\n")
        await w.drain()
        return (await asyncio.wait_for(r.read(), timeout)).decode()
    finally:
        w.close()


class Haproxy:
    """`async with Haproxy(cfg) as h:` runs haproxy -db as our child."""

    def __init__(self, cfg: HaproxyConfig, binary: Optional[str] = None) -> None:
        self.cfg = cfg
        self.binary = binary or shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.dir = tempfile.mkdtemp(prefix="nfvha-haproxy-")
        self.sock = os.path.join(self.dir, "stats.sock")
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.log: List[Tuple[float, str]] = []          # (monotonic, line)
        self.on_log: Optional[Callable[[float, str], None]] = None
        self._readers: List[asyncio.Task] = []

    async def __aenter__(self) -> Haproxy:
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(self.cfg.render(self.sock))
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "-db", "-f", path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._readers = [asyncio.create_task(self._read(s))
                         for s in (self.proc.stdout, self.proc.stderr)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError("haproxy exited: " + " | ".join(x for _, x in self.log))
            try:
                await self.stats()
                return self
            except OSError:
                await asyncio.sleep(0.02)
        raise RuntimeError("haproxy stats socket never came up")

    async def _read(self, stream: Optional[asyncio.StreamReader]) -> None:
        assert stream is not None
        while True:
            line = await stream.readline()
            if not line:
                return
            t = time.monotonic()
            text = line.decode(errors="replace").rstrip()
            self.log.append((t, text))
            if self.on_log is not None:
                self.on_log(t, text)

    async def stats(self) -> Dict[str, ServerStat]:
        return parse_show_stat(await stats_command(self.sock, "show stat"))

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for t in self._readers:
            t.cancel()
        shutil.rmtree(self.dir, ignore_errors=True)


class StatsWatcher:
    """Polls `show stat` every `interval` and reports changes per server:
    on_status(server, old, new, t) and keeps each counter's history."""

    def __init__(self, haproxy: Haproxy, interval: float = 0.01) -> None:
        self.h, self.interval = haproxy, interval
        self.last: Dict[str, ServerStat] = {}
        self.history: List[Tuple[float, Dict[str, ServerStat]]] = []
        self.on_status: Optional[Callable[[str, str, str, float], None]] = None
        self.polls = 0
        self.max_gap = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        prev_t: Optional[float] = None
        while not stop.is_set():
            try:
                stats = await self.h.stats()
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(self.interval)
                continue
            t = time.monotonic()
            self.polls += 1
            if prev_t is not None:
                self.max_gap = max(self.max_gap, t - prev_t)
            prev_t = t
            changed = {k: v for k, v in stats.items() if self.last.get(k) != v}
            if changed:
                self.history.append((t, stats))
            for name, st in stats.items():
                old = self.last.get(name)
                if old is not None and old.status != st.status and self.on_status:
                    self.on_status(name, old.status, st.status, t)
            self.last = stats
            await asyncio.sleep(self.interval)

    def last_increase(self, server: str, counter: str, after: float,
                      before: float = float("inf")) -> Optional[float]:
        """Time of the last poll in [after, before) at which `counter` of `server` grew."""
        prev = None
        found = None
        for t, stats in self.history:
            st = stats.get(server)
            if st is None:
                continue
            v = getattr(st, counter)
            if prev is not None and v > prev and after <= t < before:
                found = t
            prev = v
        return found
