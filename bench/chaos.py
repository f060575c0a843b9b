"""`make chaos`: every component killed mid-stream; what the sinks were told.

Separate processes, as deployed: 3 controllers (``nfvha controller``) on one
PostgreSQL and one RabbitMQ, 2 compute agents (``nfvha compute``, fault
spool on) heartbeating simulated guests (``nfvha.compute.simguest``, one
process per compute) and relaying server-group messaging peers (sockets
played by this process). The PostgreSQL cluster (initdb in a temporary
directory, its own port) and the RabbitMQ node (its own node name, port and
data directory: nfvha/verify/deploy/rabbitmq_cluster.py) are this bench's
own: the machine's shared ones are never touched.

A steady stream of faults (a guest hangs, answers unhealthy, or its channel
is cut) and of server-group broadcasts runs throughout, and meanwhile:
kill -9 of a controller and its restart, kill -9 of a compute agent and its
restart, a restart of the broker, a restart of the database server.

Sinks record every delivery: the webhook stand-in (the event id is its
Idempotency-Key) and the Masakari stand-in (a VM notification: no event id,
the event is known by host, instance and generated_time).

Printed at the end: faults detected (each compute agent's own log line
``instance U: fault KIND``, across its restarts) against distinct events
delivered to each sink (lost: detected, never delivered), deliveries of one
event more than once, the longest detection -> delivery delay of the faults
detected around each disruption, and broadcasts lost outside the bus outage
(the outage: from the broker's stop until, from each compute's peers, a
broadcast sent after its return reaches every peer).

    python bench/chaos.py [--short] [--json] [--seconds S] [--guests N]

Needs RabbitMQ's and PostgreSQL's server binaries (Debian packages
rabbitmq-server, postgresql) and, as root, the postgres user.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from glob import glob
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nfvha.standins.masakari import MasakariStandin  # noqa: E402
from nfvha.standins.webhook import WebhookStandin  # noqa: E402
from nfvha.verify.deploy import rabbitmq_cluster  # noqa: E402

FAULT_RE = re.compile(r"instance (\S+): fault (\w+) ")


def free_port() -> int:
    return rabbitmq_cluster.free_port()


# --------------------------------------------------------------------- PostgreSQL
def pg_bindir() -> Optional[Path]:
    found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


class Postgres:
    """A PostgreSQL cluster of our own: data in a temporary directory, a
    free port on 127.0.0.1, trust authentication (nothing else listens)."""

    def __init__(self, workdir: Path) -> None:
        bindir = pg_bindir()
        assert bindir is not None
        self.bin = bindir
        self.dir = workdir / "pgdata"
        self.sockdir = workdir / "pgsock"
        self.log = workdir / "postgres.log"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        for d in (self.dir, self.sockdir):
            d.mkdir(mode=0o700)
        self.log.touch()
        if os.geteuid() == 0:
            for p in (self.dir.parent, self.dir, self.sockdir, self.log):
                shutil.chown(p, "postgres")
        self._run("initdb", "-D", str(self.dir), "-A", "trust", "-U", self.user,
                  "--no-sync")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off -c max_connections=200", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", mode, "-w", "-t", "60", "stop")


# --------------------------------------------------------------------- sinks
class TimedWebhook(WebhookStandin):
    """The webhook stand-in, with the wall time of each accepted delivery.
    It answers `delay_s` after a request arrives, so that a controller can be
    killed while one of its deliveries is in flight (`inflight`: path and
    event id of the requests not answered yet)."""

    def __init__(self, delay_s: float = 0.2) -> None:
        self.times: list[float] = []
        self.delay_s = delay_s
        self.inflight: set[tuple[str, str]] = set()
        super().__init__()

    async def _record(self, request: Any) -> tuple[Any, Any]:
        rec, failed = await super()._record(request)
        if failed is None:
            key = (rec.path, rec.headers.get("idempotency-key", ""))
            self.inflight.add(key)
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                self.inflight.discard(key)
        return rec, failed

    def _accept(self, rec: Any) -> None:
        self.times.append(time.time())
        super()._accept(rec)

    def deliveries(self) -> list[tuple[str, float, dict[str, Any]]]:
        """(event key, wall time, event) of each accepted delivery."""
        return [(r.headers.get("idempotency-key", ""), t, r.body)
                for r, t in zip(self.received, self.times)]


class TimedMasakari(MasakariStandin):
    """The Masakari stand-in with the time each notification was answered.
    Like the real one it answers 409 "is duplicate" to the same VM's
    notification within 180 s of an earlier one (a second fault, or a
    delivery repeated after a controller was killed): the sink counts that
    delivered, and Masakari starts no second recovery."""

    def __init__(self) -> None:
        self.times: list[float] = []
        super().__init__()

    def _accept(self, rec: Any) -> None:
        self.times.append(time.time())
        super()._accept(rec)

    @staticmethod
    def _key(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        n = body["notification"]
        key = f"{n['hostname']}|{n['payload']['instance_uuid']}|{n['generated_time']}"
        return key, {"host": n["hostname"], "instance_uuid": n["payload"]["instance_uuid"],
                     "detected_at": n["generated_time"]}

    def deliveries(self) -> list[tuple[str, float, dict[str, Any]]]:
        """Every notification Masakari accepted (a key twice = two recoveries),
        then each one it absorbed as a duplicate that it had not accepted
        under that key (delivered: the earlier recovery covers it)."""
        out = []
        for r, t in zip(self.received, self.times):
            key, ev = self._key(r.body)
            out.append((key, t, ev))
        seen = {k for k, _, _ in out}
        for t, r in self.duplicates:
            key, ev = self._key(r.body)
            if key not in seen:
                seen.add(key)
                out.append((key, t, ev))
        return out


# --------------------------------------------------------------------- peers
class Peer:
    """A server-group member's messaging channel (QEMU's listening side and
    the guest at once): sends broadcasts, records what reaches it."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path
        self.got: set[str] = set()
        self.writer: Optional[asyncio.StreamWriter] = None
        self.server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.writer is not None:  # QEMU takes one client at a time
            w.close()
            return
        self.writer = w
        buf = b""
        try:
            while data := await r.read(65536):
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    with contextlib.suppress(ValueError, AttributeError):
                        d = json.loads(line).get("data") if line.strip() else None
                        if isinstance(d, dict) and d.get("msg_type") == "broadcast":
                            self.got.add(str(d.get("data")))
        except OSError:
            pass
        finally:
            self.writer = None
            w.close()

    def broadcast(self, data: str) -> bool:
        if self.writer is None or self.writer.is_closing():
            return False
        env = {"version": 2, "source_addr": "cgcs.server_grp", "dest_addr": "cgcs.server_grp",
               "data": {"version": 2, "msg_type": "broadcast", "data": data}}
        self.writer.write(b"\n" + json.dumps(env).encode() + b"\n")
        return True

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.writer is not None:
            self.writer.close()


@dataclass
class Broadcast:
    data: str
    sender: str
    sent: float            # monotonic
    to: list[str]          # the other members connected when it was sent


# --------------------------------------------------------------------- services
@dataclass
class Compute:
    name: str
    conf: Path
    log: Path
    instdir: Path
    proc: Optional[asyncio.subprocess.Process] = None
    guests: Optional[asyncio.subprocess.Process] = None
    uuids: list[str] = field(default_factory=list)


@dataclass
class Disruption:
    what: str
    start: float     # monotonic
    end: float = 0.0  # monotonic: back (restarted and serving)


class Chaos:
    def __init__(self, workdir: Path, short: bool, seconds: float, guests: int,
                 masakari: bool) -> None:
        self.dir = workdir
        self.short = short
        self.seconds = seconds
        self.n_guests = guests
        self.use_masakari = masakari
        self.run = os.urandom(3).hex()
        self.rng = random.Random()
        self.pg = Postgres(workdir)
        self.rabbit = rabbitmq_cluster.RabbitCluster(workdir / "rabbit", n=1)
        self.hook = TimedWebhook()
        self.masakari = TimedMasakari()
        self.controllers: dict[str, Optional[asyncio.subprocess.Process]] = {}
        self.computes: dict[str, Compute] = {}
        self.peers: dict[str, Peer] = {}
        self.groups: dict[str, list[str]] = {}
        self.broadcasts: list[Broadcast] = []
        self.disruptions: list[Disruption] = []
        self.bus_out: Optional[Disruption] = None
        self.relay_out: dict[Path, tuple[float, float]] = {}  # a compute's relay dead
        self.down: set[str] = set()  # computes whose agent is dead
        self.killed_in_flight: list[str] = []  # event ids in flight at a controller kill
        self.kill_walls: list[float] = []  # wall time of each controller kill
        self.injected: Counter[str] = Counter()
        self.errors: list[str] = []

    # ---------------------------------------------------------------- layout
    def _write_confs(self) -> None:
        url = f"rabbit://guest:guest@127.0.0.1:{self.rabbit.nodes['r1'].port}/"
        groups = self.dir / "groups.json"
        groups.write_text(json.dumps([{"id": g, "name": g, "members": m}
                                      for g, m in self.groups.items()]))
        sinks = "webhook,masakari" if self.use_masakari else "webhook"
        (self.dir / "common.conf").write_text(
            f"[DEFAULT]\ncontrol_exchange = nfvha-chaos-{self.run}\n"
            f"[bus]\ntransport_url = {url}\n"
            f"[database]\nconnection = {self.pg.url}\n"
            f"[reporters]\nenabled = {sinks}\nretry_base_s = 0.05\nretry_max_s = 1.0\n"
            "[masakari]\ncloud = chaos\n"
            "[hosts]\nreport_host_down = false\n"
            f"[servergroup]\ngroups_file = {groups}\n"
            "[heartbeat]\nagent_report_interval_s = 0.5\nagent_down_after_s = 3.0\n")
        (self.dir / "clouds.yaml").write_text(json.dumps({"clouds": {"chaos": {
            "auth_type": "none", "auth": {"endpoint": self.masakari.url},
            "instance_ha_endpoint_override": self.masakari.url + "/v1"}}}))
        for i in (1, 2, 3):
            (self.dir / f"ctl{i}.conf").write_text(
                f"[DEFAULT]\nhost = chaos-ctl{i}-{self.run}\ncontroller_id = ctl{i}-{self.run}\n"
                # a path of its own: the bench sees whose delivery is in flight
                f"[webhook]\nurl = {self.hook.url}/ctl{i}\n")

    def _env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(ROOT),
                    OS_CLIENT_CONFIG_FILE=str(self.dir / "clouds.yaml"))

    async def _spawn(self, log: Path, *args: str) -> asyncio.subprocess.Process:
        out = open(log, "ab")  # noqa: SIM115 - the child's
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nfvha.cli.main", *args, stdout=out, stderr=out,
                env=self._env(), cwd=str(ROOT))
        finally:
            out.close()

    async def start_controller(self, name: str) -> None:
        self.controllers[name] = await self._spawn(
            self.dir / f"{name}.log", "controller", "--config-file",
            str(self.dir / "common.conf"), "--config-file", str(self.dir / f"{name}.conf"),
            "--api", "127.0.0.1:0")

    async def start_compute(self, c: Compute) -> None:
        c.proc = await self._spawn(c.log, "compute", "--config-file",
                                   str(self.dir / "common.conf"), "--config-file", str(c.conf))

    async def _guests(self, c: Compute, count: int) -> None:
        c.guests = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfvha.compute.simguest", "--dir", str(c.instdir),
            "--count", str(count), "--interval-ms", "300", stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=str(ROOT), env=self._env())
        assert c.guests.stdout is not None
        c.uuids = json.loads(await asyncio.wait_for(c.guests.stdout.readline(), 60))["ready"]
        asyncio.get_running_loop().create_task(self._drain(c.guests.stdout))

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def tell(self, c: Compute, line: str) -> None:
        assert c.guests is not None and c.guests.stdin is not None
        c.guests.stdin.write(line.encode() + b"\n")
        await c.guests.stdin.drain()

    # ---------------------------------------------------------------- set-up
    def _start_rabbit(self) -> None:
        """The node, on fresh ports and a fresh directory if it does not come
        up: a free port picked before the slow boot may be taken meanwhile
        (a loaded CI saw a node not serving after 120 s once)."""
        for attempt in range(3):
            try:
                self.rabbit.start(timeout=60)
                return
            except (TimeoutError, RuntimeError) as exc:
                nd = self.rabbit.nodes["r1"]
                tail = ""
                for f in (nd.log, nd.dir / "stdout.log"):
                    with contextlib.suppress(OSError):
                        tail += f"--- {f}\n" + "\n".join(
                            Path(f).read_text(errors="replace").splitlines()[-15:]) + "\n"
                print(f"chaos: RabbitMQ node attempt {attempt + 1} failed: {exc}\n{tail}",
                      file=sys.stderr)
                if attempt == 2:
                    raise
                self.rabbit = rabbitmq_cluster.RabbitCluster(
                    self.dir / f"rabbit{attempt + 2}", n=1)

    async def setup(self) -> None:
        loop = asyncio.get_running_loop()
        pg = loop.run_in_executor(None, lambda: (self.pg.init(), self.pg.start()))
        rb = loop.run_in_executor(None, self._start_rabbit)
        await self.hook.start()
        await self.masakari.start()
        per = [self.n_guests // 2, self.n_guests - self.n_guests // 2]
        # two groups of four members, each spread over both computes
        names = {f"sg{g}m{m}": g for g in (1, 2) for m in range(4)}
        for g in (1, 2):
            self.groups[f"g{g}"] = [n for n, gg in names.items() if gg == g]
        for i, count in zip((1, 2), per):
            name = f"chaos-cmp{i}-{self.run}"
            inst = self.dir / f"cmp{i}"
            inst.mkdir()
            c = Compute(name, self.dir / f"cmp{i}.conf", self.dir / f"cmp{i}.log", inst)
            (self.dir / f"spool{i}").mkdir()
            c.conf.write_text(f"[DEFAULT]\nhost = {name}\n[heartbeat]\ninstances_dir = {inst}\n"
                              f"spool_dir = {self.dir / f'spool{i}'}\n")
            self.computes[name] = c
            await self._guests(c, count)
            for n in list(names)[i - 1::2]:
                self.peers[n] = Peer(n, inst / f"cgcs.messaging.{n}.sock")
                await self.peers[n].start()
        await pg
        await rb
        self._write_confs()
        for i in (1, 2, 3):
            await self.start_controller(f"ctl{i}")
        for c in self.computes.values():
            await self.start_compute(c)

    async def wait_ready(self, timeout: float) -> None:
        """Every peer connected, every guest heartbeating, a broadcast through."""
        deadline = time.monotonic() + timeout
        n = 0
        while True:
            n += 1
            tag = f"ready-{n}"
            if all(p.broadcast(tag) for p in (self.peers["sg1m0"],)):
                await asyncio.sleep(0.5)
                others = [p for name, p in self.peers.items()
                          if name in self.groups["g1"] and name != "sg1m0"]
                if all(tag in p.got for p in others) and \
                        all(p.writer is not None for p in self.peers.values()):
                    return
            else:
                await asyncio.sleep(0.5)
            if time.monotonic() > deadline:
                raise RuntimeError("the services never became ready; logs in " + str(self.dir))

    # ---------------------------------------------------------------- load
    async def faults(self, stop: asyncio.Event) -> None:
        """A fault every `gap` s on a healthy guest, which comes back later
        (hang resumed, unhealthy made healthy); a cut channel stays cut."""
        busy: set[str] = set()
        cut: set[str] = set()
        gap = 0.5
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            c = self.rng.choice(list(self.computes.values()))
            # not while its agent is dead: nobody would see it
            free = [u for u in c.uuids if u not in busy and u not in cut] \
                if c.name not in self.down else []
            if free:
                u = self.rng.choice(free)
                kind = self.rng.choices(["hang", "unhealthy", "cut"], [5, 4, 1])[0]
                if kind == "cut" and len(cut) >= self.n_guests // 5:
                    kind = "hang"
                self.injected[kind] += 1
                if kind == "cut":
                    cut.add(u)
                    await self.tell(c, f"close {u}")
                else:
                    busy.add(u)
                    await self.tell(c, f"{kind} {u}")
                    undo = "resume" if kind == "hang" else "healthy"

                    def back(c: Compute = c, u: str = u, undo: str = undo) -> None:
                        loop.create_task(self.tell(c, f"{undo} {u}"))
                        loop.call_later(2.0, busy.discard, u)

                    loop.call_later(3.0, back)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), gap)

    async def broadcasts_loop(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            for g, members in self.groups.items():
                sender = members[n % len(members)]
                to = [m for m in members if m != sender and self.peers[m].writer is not None]
                data = f"b{n}-{g}"
                if self.peers[sender].broadcast(data):
                    self.broadcasts.append(Broadcast(data, sender, time.monotonic(), to))
            n += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    # ---------------------------------------------------------------- disruptions
    async def kill_controller(self, name: str, down_s: float) -> None:
        p = self.controllers[name]
        assert p is not None
        # when one of its webhook deliveries is in flight (the sink got it, the
        # controller has not heard back), if one comes within 15 s
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            mine = [e for path, e in self.hook.inflight if path == f"/{name}"]
            if mine:
                self.killed_in_flight += mine
                break
            await asyncio.sleep(0.005)
        d = Disruption(f"kill -9 controller {name}", time.monotonic())
        self.kill_walls.append(time.time())
        p.send_signal(signal.SIGKILL)
        await p.wait()
        await asyncio.sleep(down_s)
        await self.start_controller(name)
        d.end = time.monotonic()
        self.disruptions.append(d)

    async def kill_compute(self, c: Compute, down_s: float) -> None:
        assert c.proc is not None
        d = Disruption(f"kill -9 compute {c.name.split('-')[1]}", time.monotonic())
        self.down.add(c.name)
        c.proc.send_signal(signal.SIGKILL)
        await c.proc.wait()
        await asyncio.sleep(down_s)
        await self.start_compute(c)
        d.end = time.monotonic()
        self.disruptions.append(d)
        # its peers' relay is gone until the new agent has them all again (and
        # the controllers their placement: a grace of 2 s after)
        mine = [p for p in self.peers.values() if p.path.parent == c.instdir]
        deadline = time.monotonic() + 60
        while not all(p.writer is not None for p in mine) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.relay_out[c.instdir] = (d.start - 0.5, time.monotonic() + 2.0)
        self.down.discard(c.name)

    async def restart_broker(self) -> None:
        d = Disruption("restart RabbitMQ", time.monotonic())
        self.bus_out = d
        loop = asyncio.get_running_loop()

        def restart() -> None:
            proc = self.rabbit._procs["r1"]
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.rabbit._launch("r1")
            self.rabbit.wait_amqp("r1", 120)

        await loop.run_in_executor(None, restart)
        d.end = time.monotonic()
        self.disruptions.append(d)

    async def restart_database(self) -> None:
        d = Disruption("restart PostgreSQL", time.monotonic())
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: (self.pg.stop("fast"), self.pg.start()))
        d.end = time.monotonic()
        self.disruptions.append(d)

    async def scenario(self) -> None:
        """The disruptions, spread over the run (times scale with --seconds)."""
        s = self.seconds
        steps = [(0.10, lambda: self.kill_controller("ctl1", 1.0)),
                 (0.25, lambda: self.kill_compute(list(self.computes.values())[0], 1.0)),
                 (0.40, self.restart_broker),
                 (0.70, self.restart_database)]
        t0 = time.monotonic()
        for at, step in steps:
            await asyncio.sleep(max(0.0, t0 + at * s - time.monotonic()))
            await step()
        await asyncio.sleep(max(0.0, t0 + s - time.monotonic()))

    # ---------------------------------------------------------------- accounting
    def detected(self) -> list[tuple[str, str, str]]:
        """(host, instance, kind) of each fault the compute agents logged."""
        out = []
        for c in self.computes.values():
            for line in c.log.read_text(errors="replace").splitlines():
                m = FAULT_RE.search(line)
                if m and " WARNING " in line:
                    out.append((c.name, m.group(1), m.group(2)))
        return out

    def sink_report(self, deliveries: list[tuple[str, float, dict[str, Any]]],
                    detected: Counter[tuple[str, str]], by_kind: bool,
                    kinds: Counter[tuple[str, str, str]]) -> dict[str, Any]:
        per_key: Counter[str] = Counter(k for k, _, _ in deliveries)
        first: dict[str, tuple[float, dict[str, Any]]] = {}
        for k, t, ev in deliveries:
            first.setdefault(k, (t, ev))
        got: Counter[Any] = Counter()
        for _k, (_t, ev) in first.items():
            got[(ev["host"], ev["instance_uuid"], ev.get("kind")) if by_kind
                else (ev["host"], ev["instance_uuid"])] += 1
        want = kinds if by_kind else detected
        lost = sum(max(0, n - got.get(k, 0)) for k, n in want.items())
        # each repeated event: its instance and when it was told, wall time
        repeated = [{"instance": first[k][1]["instance_uuid"],
                     "at": [round(t, 3) for kk, t, _ in deliveries if kk == k]}
                    for k, n in per_key.items() if n > 1]
        return {"delivered": len(first), "lost": lost,
                "duplicates": sum(n - 1 for n in per_key.values() if n > 1),
                "repeated": repeated[:10], "_first": first}

    def delays(self, first: dict[str, tuple[float, dict[str, Any]]]
               ) -> list[tuple[float, float]]:
        """(detected, monotonic; delay s) of each delivered event."""
        off = time.time() - time.monotonic()
        out = []
        for t, ev in first.values():
            det = datetime.fromisoformat(ev["detected_at"].replace("Z", "+00:00")).timestamp()
            out.append((det - off, t - det))
        return out

    async def settle(self, timeout: float) -> None:
        """Until every logged fault reached the webhook (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            want = Counter(self.detected())
            rep = self.sink_report(self.hook.deliveries(), Counter(), True, want)
            if rep["lost"] == 0:
                return
            await asyncio.sleep(0.5)

    def results(self) -> dict[str, Any]:
        det = self.detected()
        kinds = Counter(det)
        hosts = Counter((h, u) for h, u, _ in det)
        sinks = {"webhook": self.sink_report(self.hook.deliveries(), hosts, True, kinds)}
        if self.use_masakari:
            # Masakari's notification names no fault kind: counted per host and VM
            sinks["masakari"] = self.sink_report(self.masakari.deliveries(), hosts, False,
                                                 kinds)
        around: dict[str, float] = {}
        max_delay = 0.0
        for rep in sinks.values():
            ds = self.delays(rep.pop("_first"))
            max_delay = max([max_delay, *(d for _, d in ds)])
            starts = sorted(d.start for d in self.disruptions) + [float("inf")]
            for dis in self.disruptions:
                # faults detected from 2 s before the kill to 5 s after the return,
                # not past the next disruption's start
                nxt = min(s for s in starts if s > dis.start)
                near = [d for t, d in ds if dis.start - 2 <= t <= min(dis.end + 5, nxt)]
                if near:
                    key = dis.what
                    around[key] = max(around.get(key, 0.0), max(near) * 1000)
        # the bus outage ends when, from each compute's peers, a broadcast sent
        # after the broker is back reaches all (each agent reconnects on its own)
        out_start = self.bus_out.start if self.bus_out else float("inf")
        out_end = out_start
        if self.bus_out is not None:
            back: dict[Path, float] = {}
            for b in self.broadcasts:
                where = self.peers[b.sender].path.parent
                if where not in back and b.sent >= self.bus_out.end and b.to and \
                        all(b.data in self.peers[m].got for m in b.to):
                    back[where] = b.sent
            out_end = max(back.values()) if len(back) == len(self.computes) \
                else float("inf")
        lost_in = lost_out = lost_relay = expected = 0
        lost_detail: list[dict[str, Any]] = []

        def relay_dead(peer: str, at: float) -> bool:
            lo, hi = self.relay_out.get(self.peers[peer].path.parent, (0.0, -1.0))
            return lo <= at <= hi

        for b in self.broadcasts:
            expected += len(b.to)
            for m in b.to:
                if b.data in self.peers[m].got:
                    continue
                if out_start <= b.sent <= out_end:
                    lost_in += 1
                elif relay_dead(b.sender, b.sent) or relay_dead(m, b.sent):
                    lost_relay += 1
                else:
                    lost_out += 1
                    if len(lost_detail) < 10:
                        lost_detail.append({"data": b.data, "from": b.sender, "to": m, "since": {
                            d.what: round(b.sent - d.start, 2) for d in self.disruptions}})
        # the deliveries in flight on a killed controller: made again by another?
        told = Counter(k for k, _, _ in self.hook.deliveries())
        in_flight = [{"id": e, "told": told.get(e, 0),
                      "paths": [r.path for r in self.hook.received
                                if r.headers.get("idempotency-key") == e]}
                     for e in self.killed_in_flight]
        compute_counters = {c.name.split("-")[1]: sum(1 for h, _, _ in det if h == c.name)
                            for c in self.computes.values()}
        return {
            "faults_detected": len(det),
            "faults_by_compute": compute_counters,
            "faults_by_kind": dict(Counter(k for _, _, k in det)),
            "injected": dict(self.injected),
            "guests": self.n_guests,
            "sinks": sinks,
            "webhook_in_flight_at_controller_kill": in_flight,
            "controller_kills_wall": [round(t, 3) for t in self.kill_walls],
            "broadcasts_sent": len(self.broadcasts),
            "broadcast_deliveries_expected": expected,
            "broadcasts_lost_outside_outage": lost_out,
            "broadcasts_lost_outside_outage_detail": lost_detail,
            "broadcasts_lost_in_outage": lost_in,
            "broadcasts_lost_with_a_killed_relay": lost_relay,
            "bus_outage_s": (out_end - out_start) if self.bus_out else 0.0,
            "max_delay_ms": round(max_delay * 1000, 1),
            "max_delay_ms_around": {k: round(v, 1) for k, v in around.items()},
            "disruptions": [{"what": d.what, "down_s": round(d.end - d.start, 2)}
                            for d in self.disruptions],
            "seconds": self.seconds,
        }

    # ---------------------------------------------------------------- whole run
    async def main(self) -> dict[str, Any]:
        try:
            await self.setup()
            await self.wait_ready(90)
            stop = asyncio.Event()
            tasks = [asyncio.create_task(self.faults(stop)),
                     asyncio.create_task(self.broadcasts_loop(stop))]
            try:
                await self.scenario()
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
            # what is hung now gets detected; then every fault is delivered
            await asyncio.sleep(3.0)
            await self.settle(30 if self.short else 60)
            await asyncio.sleep(1.0)  # a late duplicate would show now
            return self.results()
        finally:
            await self.teardown()

    async def teardown(self) -> None:
        procs = [p for p in self.controllers.values() if p is not None]
        for c in self.computes.values():
            procs += [p for p in (c.proc, c.guests) if p is not None]
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 15)
            except asyncio.TimeoutError:
                p.kill()
                await p.wait()
        for peer in self.peers.values():
            await peer.close()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(None, self.pg.stop, "immediate")
        await loop.run_in_executor(None, self.rabbit.stop)
        for s in (self.hook, self.masakari):
            with contextlib.suppress(Exception):
                await s.stop()


def unavailable() -> Optional[str]:
    """Why the bench cannot run here, or None."""
    why = rabbitmq_cluster.available()
    if why:
        return why
    if pg_bindir() is None:
        return "PostgreSQL server binaries are missing (/usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "runuser is missing"
    return None


def run(short: bool, seconds: Optional[float] = None, guests: int = 52,
        masakari: bool = True, keep: bool = False) -> dict[str, Any]:
    seconds = seconds or (30.0 if short else 240.0)
    tmp = tempfile.mkdtemp(prefix="nfvha-chaos-", dir="/tmp")
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)  # the postgres user reaches its data directory
    try:
        return asyncio.run(Chaos(Path(tmp), short, seconds, guests, masakari).main())
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)


def public(res: dict[str, Any]) -> dict[str, Any]:
    """The --json document: the figures the issue names first, the rest after."""
    return {"faults_detected": res["faults_detected"], "sinks": res["sinks"],
            "broadcasts_lost_outside_outage": res["broadcasts_lost_outside_outage"],
            "max_delay_ms": res["max_delay_ms"],
            **{k: v for k, v in res.items() if k not in (
                "faults_detected", "sinks", "broadcasts_lost_outside_outage", "max_delay_ms")}}


def table(res: dict[str, Any]) -> str:
    lines = [f"chaos: 3 controllers, 2 computes, {res['guests']} guests, "
             f"{res['seconds']:.0f} s of faults and broadcasts; disruptions: "
             + ", ".join(f"{d['what']} (back after {d['down_s']} s)"
                         for d in res["disruptions"]),
             f"faults detected by the compute agents: {res['faults_detected']} "
             f"{res['faults_by_kind']} (injected {res['injected']})",
             f"{'sink':<10} {'delivered':>9} {'lost':>5} {'duplicates':>10}"]
    for name, s in res["sinks"].items():
        lines.append(f"{name:<10} {s['delivered']:>9} {s['lost']:>5} {s['duplicates']:>10}")
    for f in res["webhook_in_flight_at_controller_kill"]:
        lines.append(f"webhook delivery in flight on the killed controller: told "
                     f"{f['told']} time(s), by {', '.join(f['paths'])}")
    lines.append(f"longest detection -> delivery: {res['max_delay_ms']:.0f} ms overall; "
                 "around each disruption: " + ", ".join(
                     f"{k} {v:.0f} ms" for k, v in res["max_delay_ms_around"].items()))
    lines.append(f"broadcasts: {res['broadcasts_sent']} sent "
                 f"({res['broadcast_deliveries_expected']} deliveries due), lost outside the "
                 f"bus outage {res['broadcasts_lost_outside_outage']}, during it "
                 f"{res['broadcasts_lost_in_outage']} (outage {res['bus_outage_s']:.1f} s), "
                 f"to or from a killed compute agent's peers "
                 f"{res['broadcasts_lost_with_a_killed_relay']}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", "--quick", action="store_true", help="about 30 s of chaos (CI)")
    p.add_argument("--seconds", type=float, help="length of the fault stream (default 240)")
    p.add_argument("--guests", type=int, default=52)
    p.add_argument("--no-masakari", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    why = unavailable()
    if why:
        print(json.dumps({"skipped": why}) if args.json else f"skipped: {why}")
        return 0
    res = run(args.short, args.seconds, args.guests, not args.no_masakari, args.keep)
    print(json.dumps(public(res), indent=1) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
