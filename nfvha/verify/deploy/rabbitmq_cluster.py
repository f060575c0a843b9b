"""A private three-node RabbitMQ cluster on this machine (synchronous API).

Yardstick tc056 kills rabbitmq-server on one controller of a RabbitMQ
cluster. Here the "controllers" are three RabbitMQ nodes of Debian's
rabbitmq-server on 127.0.0.1, each with its own node name
(`nfvha-<rid>-r<i>@localhost`), AMQP port, Erlang distribution port, data
(mnesia) and log directories, config file and env file. The machine's own
broker (rabbit@localhost, 5672, /etc/rabbitmq, /var/lib/rabbitmq) is never
read or written: `RABBITMQ_CONF_ENV_FILE` points at our (empty) env file,
the Erlang cookie lives in a private `HOME`. The nodes share the system's
epmd (127.0.0.1:4369), which only maps names to ports.

Each node runs `/usr/lib/rabbitmq/bin/rabbitmq-server` with
`RABBITMQ_ALLOW_INPUT=1` (the script then `exec`s erl, so the pid is the
beam.smp itself: kill -9 of it is kill -9 of the broker) and `-noinput`.

The cluster forms by classic-config peer discovery: r1 boots first, r2 and
r3 then find it and join. A restarted node rejoins with its own data.

Supervision: with a `PacemakerCluster` each node is an
ocf:heartbeat:anything resource (monitor every `monitor_ms`), so a killed
node is restarted by the cluster manager; without one they are plain
children (no recovery).

Events of the surviving nodes come from their logs (RabbitMQ 3.10 stamps
each line in microseconds, UTC): `LogFollower` reads them every 10 ms.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import amqp

from nfvha.verify.deploy import netns
from nfvha.verify.deploy.pacemaker import PacemakerCluster
from nfvha.verify.deploy.procfs import is_zombie, stop_all

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def available() -> str | None:
    """None if the cluster can run here, else why not."""
    for p in (SERVER, CTL):
        if not os.path.exists(p):
            return f"{p} is missing (Debian package rabbitmq-server)"
    if shutil.which("erl") is None:
        return "erl is missing (Debian package erlang-base)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Node:
    name: str            # short id: r1, r2, r3
    nodename: str        # Erlang node name
    port: int            # AMQP
    dist_port: int       # Erlang distribution
    dir: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def log(self) -> Path:
        return self.dir / "log" / "rabbit.log"


@dataclasses.dataclass(frozen=True)
class LogLine:
    node: str            # r1..
    mono: float          # the line's own stamp on time.monotonic()'s scale
    level: str
    text: str


_LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)([+-]\d\d:\d\d) "
                     r"\[(\w+)\] <[^>]*> (.*)$")


def parse_log_line(line: str, offset: float) -> tuple[float, str, str] | None:
    """(monotonic, level, text) of one RabbitMQ 3.10 log line; None if not a line start."""
    m = _LOG_RE.match(line)
    if not m:
        return None
    wall = dt.datetime.fromisoformat(m.group(1) + m.group(2)).timestamp()
    return wall - offset, m.group(3), m.group(4)


class RabbitCluster:
    """Three (or `n`) RabbitMQ nodes clustered on 127.0.0.1; see module doc."""

    def __init__(self, workdir: Path, n: int = 3, cluster: PacemakerCluster | None = None,
                 monitor_ms: int = 100):
        self.workdir = Path(workdir)
        self.cluster = cluster
        self.monitor_ms = monitor_ms
        self.rid = netns.run_id()
        self.home = self.workdir / "home"
        self.nodes: dict[str, Node] = {}
        for i in range(1, n + 1):
            name = f"r{i}"
            self.nodes[name] = Node(name, f"nfvha-{self.rid}-{name}@localhost", free_port(),
                                    free_port(), self.workdir / name)
        self._procs: dict[str, subprocess.Popen] = {}

    # ----------------------------------------------------------- layout
    def resource(self, node: str) -> str:
        return f"rmq-{self.rid}-{node}"

    def env(self, node: str) -> dict[str, str]:
        nd = self.nodes[node]
        return {
            "HOME": str(self.home),                       # the private Erlang cookie
            "RABBITMQ_NODENAME": nd.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(nd.port),
            "RABBITMQ_DIST_PORT": str(nd.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(nd.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(nd.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(nd.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(nd.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(nd.dir / "mnesia"),
            "RABBITMQ_MNESIA_DIR": str(nd.dir / "mnesia" / nd.nodename),
            "RABBITMQ_LOG_BASE": str(nd.dir / "log"),
            "RABBITMQ_LOGS": str(nd.log),
            "RABBITMQ_PID_FILE": str(nd.dir / "rabbit.pid"),
            "RABBITMQ_ALLOW_INPUT": "1",                 # exec erl: the pid is beam.smp
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-noinput -kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "PATH": "/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        }

    def _write_files(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(f"NFVHA{self.rid.upper()}{os.urandom(12).hex().upper()}")
        os.chmod(cookie, 0o400)
        peers = "".join(f"cluster_formation.classic_config.nodes.{i} = {nd.nodename}\n"
                        for i, nd in enumerate(self.nodes.values(), 1))
        for nd in self.nodes.values():
            (nd.dir / "log").mkdir(parents=True, exist_ok=True)
            (nd.dir / "mnesia").mkdir(parents=True, exist_ok=True)
            (nd.dir / "rabbitmq-env.conf").write_text("# nfvha: nothing from /etc/rabbitmq\n")
            (nd.dir / "enabled_plugins").write_text("[].\n")
            (nd.dir / "advanced.config").write_text("[].\n")
            (nd.dir / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{nd.port}\n"
                "loopback_users.guest = true\n"
                "cluster_formation.peer_discovery_backend = classic_config\n"
                + peers +
                "cluster_partition_handling = ignore\n"
                "log.console = false\n"
                "log.file.level = info\n"
                # no disk alarm on a busy test machine's small free space
                "disk_free_limit.absolute = 50MB\n")

    def argv(self, node: str) -> list[str]:
        return [SERVER]

    # ----------------------------------------------------------- lifecycle
    def start(self, timeout: float = 120) -> RabbitCluster:
        why = available()
        if why is not None:
            raise RuntimeError(why)
        self._write_files()
        try:
            first, *rest = list(self.nodes)
            self._launch(first)
            self.wait_amqp(first, timeout)
            for name in rest:
                self._launch(name)
            for name in rest:
                self.wait_amqp(name, timeout)
            self.wait_members(len(self.nodes), timeout)
            if self.cluster is not None:
                for name in self.nodes:
                    self.cluster.wait_running(self.resource(name), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, node: str) -> None:
        nd = self.nodes[node]
        if self.cluster is not None:
            self.cluster.add_process_resource(
                self.resource(node), self.argv(node), monitor_ms=self.monitor_ms,
                env=self.env(node), logfile=nd.dir / "stdout.log", start_timeout_s=60,
                stop_timeout_s=30)
        else:
            log = open(nd.dir / "stdout.log", "ab")
            self._procs[node] = subprocess.Popen(
                self.argv(node), env=self.env(node), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=nd.dir)
            log.close()

    def stop(self) -> None:
        if self.cluster is not None:
            for name in self.nodes:
                try:
                    self.cluster.remove_resource(self.resource(name))
                except Exception:  # noqa: BLE001 - cleanup goes on regardless
                    pass
        stop_all(self._procs.values(), wait_s=20)
        # anything left (a node Pacemaker could not stop): by its pid file
        for nd in self.nodes.values():
            pid = self._pidfile_pid(nd.name)
            if pid is not None:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------- state
    def _pidfile_pid(self, node: str) -> int | None:
        try:
            return int((self.nodes[node].dir / "rabbit.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pid(self, node: str) -> int | None:
        """The node's beam.smp pid, if it lives."""
        if self.cluster is not None:
            return self.cluster.resource_pid(self.resource(node))
        p = self._procs.get(node)
        if p is None or p.poll() is not None or is_zombie(p.pid):
            return None
        return p.pid

    def ctl(self, node: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """rabbitmqctl against one of our nodes (our cookie, never the system's)."""
        return subprocess.run([CTL, "-n", self.nodes[node].nodename, *args],
                              env=self.env(node), capture_output=True, text=True,
                              timeout=timeout)

    def running_members(self, via: str) -> list[str]:
        """Node names the cluster reports running (asked through node `via`)."""
        res = self.ctl(via, "cluster_status", "--formatter", "json")
        if res.returncode != 0:
            return []
        try:
            return list(json.loads(res.stdout).get("running_nodes", []))
        except ValueError:
            return []

    def amqp_ok(self, node: str, timeout: float = 1.0) -> bool:
        try:
            c = amqp.Connection(host=f"127.0.0.1:{self.nodes[node].port}", userid="guest",
                                password="guest", connect_timeout=timeout, heartbeat=0)
            c.connect()
            c.close()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not (yet) serving"
            return False

    def wait_amqp(self, node: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.amqp_ok(node):
                return time.monotonic()
            if self.cluster is None and self._procs[node].poll() is not None:
                raise RuntimeError(f"{node} exited ({self._procs[node].returncode}); see "
                                   f"{self.nodes[node].dir}/stdout.log and its log")
            time.sleep(0.1)
        raise TimeoutError(f"RabbitMQ node {node} not serving AMQP after {timeout} s; see "
                           f"{self.nodes[node].log}")

    def wait_members(self, n: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        members: list[str] = []
        while time.monotonic() < deadline:
            for via in self.nodes:
                if self.pid(via) is not None:
                    members = self.running_members(via)
                    break
            if len(members) >= n:
                return members
            time.sleep(0.5)
        raise TimeoutError(f"cluster has {members} running after {timeout} s, not {n} nodes")

    def kill(self, node: str, sig: int = 9) -> float:
        """kill -9 of the node's beam.smp; time.monotonic() right before the signal."""
        pid = self.pid(node)
        if pid is None:
            raise RuntimeError(f"RabbitMQ node {node} is not running")
        t = time.monotonic()
        os.kill(pid, sig)
        return t

    def follow_logs(self, nodes: list[str] | None = None,
                    interval: float = 0.01) -> LogFollower:
        return LogFollower({n: self.nodes[n].log for n in (nodes or list(self.nodes))},
                           interval).start()


class LogFollower:
    """Reads new lines of the nodes' logs every `interval` s (from their current end).

    lines: every line read, stamped with its own log time on the monotonic scale.
    """

    def __init__(self, files: dict[str, Path], interval: float = 0.01):
        self.files = files
        self.interval = interval
        self.lines: list[LogLine] = []
        self._pos = {n: (f.stat().st_size if f.exists() else 0) for n, f in files.items()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> LogFollower:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rabbit-logs")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)
        self.poll()

    def poll(self) -> None:
        offset = time.time() - time.monotonic()
        for node, path in self.files.items():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            pos = self._pos[node]
            if size < pos:          # rotated / truncated
                pos = 0
            if size == pos:
                continue
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(size - pos)
            end = data.rfind(b"\n")
            if end < 0:
                continue
            self._pos[node] = pos + end + 1
            for raw in data[:end].decode("utf-8", "replace").splitlines():
                p = parse_log_line(raw, offset)
                if p is not None:
                    with self._lock:
                        self.lines.append(LogLine(node, p[0], p[1], p[2]))

    def after(self, index: int) -> tuple[list[LogLine], int]:
        with self._lock:
            return self.lines[index:], len(self.lines)

    def find(self, pred: Callable[[LogLine], bool]) -> LogLine | None:
        with self._lock:
            return next((x for x in self.lines if pred(x)), None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
