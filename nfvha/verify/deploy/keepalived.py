"""Active/passive: keepalived VRRP between two namespaces (synchronous API).

Design (Req 5.4.6-5.4.9), everything inside namespaces created here:

* `netns.Lan`: node namespaces a and b joined through a bridge in a client
  namespace (where probes run). Node a 10.213.N.1, b .2, client .10,
  VIP 10.213.N.100/24 on the node's veth.
* In each node: nfvha's HTTP test service (`python -m nfvha.verify.backend
  --name node-<n>`, answers `ok node-<n>`; asyncio, a full listen backlog —
  `python -m http.server`'s backlog of 5 stalled SYNs for 1 s under the
  10 ms probe) and keepalived 2.2.7, `vrrp_instance` with
  `version 3` and `advert_int` 0.1 s, both nodes `state BACKUP` +
  `nopreempt` (priorities 150/100): a recovered node never takes the VIP
  back, it becomes the new backup.
* Service tracking with `vrrp_track_process` (kernel proc connector: the
  service's exit is seen at once, not at a 1 s `vrrp_script` step);
  `track="script"` uses the classic `vrrp_script` HTTP check every 1 s
  instead (slower; under a cluster a 100 ms restart can win the race and
  keepalived never fails over). The
  proc connector only works in the initial network namespace, so keepalived
  is started there and moves itself into the node's namespace with
  `-s <netns>` (inside `ip netns exec` it logs "errno 111" and never
  tracks). The match is on the service's full command line, which names
  the node's web root, so node a never counts node b's service.
* Recovery: when a `PacemakerCluster` is given, both services and both
  keepalived daemons are its ocf:heartbeat:anything resources with a
  100 ms monitor: a killed service or keepalived is restarted by the
  cluster manager and rejoins as backup. Without a cluster they are plain
  children of this process (no recovery).
* Observation without polling: each keepalived writes its state changes to
  its own `notify_fifo` (read by a thread, stamped on arrival), and an
  rtnetlink listener in each node namespace stamps every VIP add/remove.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nfvha.verify.deploy import netns
from nfvha.verify.deploy.pacemaker import PacemakerCluster
from nfvha.verify.deploy.procfs import is_zombie, read_pid, stop_all

NODES = ("a", "b")
PRIORITY = {"a": 150, "b": 100}

KEEPALIVED_CONF = """global_defs {{
    router_id nfvha_{rid}_{node}
    script_user root
    enable_script_security
    notify_fifo {fifo}
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 1
}}
{tracker}vrrp_instance VI_{rid} {{
    version 3
    state BACKUP
    nopreempt
    interface {ifname}
    virtual_router_id {vrid}
    priority {priority}
    advert_int {advert_int}
    virtual_ipaddress {{
        {vip}/24
    }}
    {track_kind} {{
        service_{node}
    }}
}}
"""

TRACK_PROCESS = """vrrp_track_process service_{node} {{
    process {service_cmd}
    quorum 1
    delay 0
}}
"""

# The classic alternative: an HTTP check every whole second (the minimum).
TRACK_SCRIPT = """vrrp_script service_{node} {{
    script "/usr/bin/curl -sf -m 0.5 -o /dev/null http://127.0.0.1:{port}/"
    interval 1
    timeout 1
    fall 1
    rise 1
}}
"""


@dataclasses.dataclass
class VrrpEvent:
    mono: float          # time.monotonic() when this process saw it
    wall: float          # time.time() at the same instant
    node: str            # "a" | "b"
    kind: str            # "state" (keepalived's notify fifo) | "vip" (rtnetlink)
    value: str           # MASTER/BACKUP/FAULT/STOP | add/del


class VrrpPair:
    """Two keepalived nodes holding one VIP; see module doc.

    ::

        with VrrpPair(tmp, cluster) as pair:
            master = pair.wait_master(10)                 # "a"
            t = pair.kill_service(master)                 # monotonic stamp
            ev = pair.wait_vip_on(pair.other(master), 5)  # VrrpEvent
            pair.wait_state(master, "BACKUP", 10)         # recovered, new backup
    """

    def __init__(self, workdir: Path, cluster: PacemakerCluster | None = None,
                 advert_int: float = 0.1, net: int = 0, port: int = 8080,
                 monitor_ms: int = 100, track: str = "process"):
        if track not in ("process", "script"):
            raise ValueError("track must be 'process' or 'script'")
        self.track = track
        self.workdir = Path(workdir)
        self.cluster = cluster
        self.advert_int = advert_int
        self.port = port
        self.monitor_ms = monitor_ms
        self.lan = netns.Lan(net=net)
        self.rid = self.lan.rid
        self.vip = f"10.213.{net}.100"
        self.events: list[VrrpEvent] = []
        self.state: dict[str, str] = {n: "INIT" for n in NODES}
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._fifo_threads: list[threading.Thread] = []
        self._fifo_fds: list[int] = []
        self._stopping = False
        self._watch: netns.AddressWatch | None = None
        self._started = False

    # --------------------------------------------------------------- names
    def ns(self, node: str) -> netns.NetNS:
        return self.lan.nodes[node]

    def other(self, node: str) -> str:
        return "b" if node == "a" else "a"

    def resource(self, node: str, what: str) -> str:
        """Pacemaker resource id of a node's 'service' or 'keepalived'."""
        return f"vrrp-{self.rid}-{what}-{node}"

    def _path(self, node: str, name: str) -> Path:
        return self.workdir / f"{node}-{name}"

    def service_argv(self, node: str) -> list[str]:
        # absolute interpreter path: keepalived matches argv[0] and the params
        return [sys.executable, "-m", "nfvha.verify.backend", "--host", "0.0.0.0",
                "--port", str(self.port), "--name", f"node-{node}"]

    def keepalived_argv(self, node: str) -> list[str]:
        # started in the initial netns and moved by -s (proc connector, see doc)
        return ["/usr/sbin/keepalived", "-s", self.ns(node).name, "-n", "-l", "-D", "-G", "-P",
                "-f", str(self._path(node, "keepalived.conf")),
                "-p", str(self._path(node, "keepalived.pid")),
                "-r", str(self._path(node, "vrrp.pid"))]

    # ----------------------------------------------------------- lifecycle
    def start(self, timeout: float = 30) -> VrrpPair:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.lan.create()
            for node in NODES:
                self._write_files(node)
                self._start_fifo_reader(node)
            self._watch = netns.AddressWatch(
                self.vip, {n: self.ns(n).name for n in NODES}).start()
            threading.Thread(target=self._copy_vip_events, daemon=True).start()
            for node in NODES:
                self._launch(node, "service", self.service_argv(node), self.ns(node).name)
            for node in NODES:
                self._launch(node, "keepalived", self.keepalived_argv(node), None)
            self._started = True
            # settled: one MASTER with the VIP, one BACKUP, past Pacemaker's start second
            self.wait_stable(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_files(self, node: str) -> None:
        fifo = self._path(node, "notify.fifo")
        if fifo.exists():
            fifo.unlink()
        os.mkfifo(fifo, 0o600)
        for stale in ("keepalived.pid", "vrrp.pid"):
            self._path(node, stale).unlink(missing_ok=True)
        self._path(node, "keepalived.conf").write_text(KEEPALIVED_CONF.format(
            rid=self.rid, node=node, fifo=fifo, ifname=self.lan.ifname[node],
            vrid=51, priority=PRIORITY[node], advert_int=self.advert_int, vip=self.vip,
            tracker=(TRACK_PROCESS if self.track == "process" else TRACK_SCRIPT).format(
                node=node, service_cmd=" ".join(self.service_argv(node)), port=self.port),
            track_kind="track_process" if self.track == "process" else "track_script"))

    def _launch(self, node: str, what: str, argv: list[str], ns_name: str | None) -> None:
        if self.cluster is not None:
            name = self.resource(node, what)
            self.cluster.add_process_resource(
                name, argv, monitor_ms=self.monitor_ms, netns_name=ns_name,
                logfile=self._path(node, f"{what}.log"))
            self.cluster.wait_running(name, 30)
        else:
            full = netns.NetNS(ns_name).exec_argv(argv) if ns_name else argv
            log = open(self._path(node, f"{what}.log"), "ab")
            self._procs[f"{what}-{node}"] = subprocess.Popen(
                full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()

    def stop(self) -> None:
        """Stops services and keepalived, removes resources and namespaces."""
        self._stopping = True
        if self.cluster is not None:
            for node in NODES:
                for what in ("keepalived", "service"):
                    try:
                        self.cluster.remove_resource(self.resource(node, what))
                    except Exception:  # noqa: BLE001 - cleanup goes on regardless
                        pass
        stop_all(self._procs.values())
        # keepalived lives in the initial netns (then moved): kill by pidfile
        for node in NODES:
            for pf in ("keepalived.pid", "vrrp.pid"):
                pid = read_pid(self._path(node, pf))
                if pid:
                    _signal(pid, signal.SIGKILL)
        if self._watch is not None:
            self._watch.stop()
        for fd in self._fifo_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.lan.delete()

    def __enter__(self) -> VrrpPair:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ observing
    def _start_fifo_reader(self, node: str) -> None:
        # O_RDWR: the reader itself holds a write end, so a keepalived restart
        # never makes us see EOF; reads block until the next line.
        fd = os.open(self._path(node, "notify.fifo"), os.O_RDWR)
        self._fifo_fds.append(fd)

        def loop() -> None:
            buf = b""
            while not self._stopping:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return
                mono, wall = time.monotonic(), time.time()
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    parts = line.decode(errors="replace").split()
                    # INSTANCE "VI_x" MASTER 150
                    if len(parts) >= 3 and parts[0] == "INSTANCE":
                        with self._lock:
                            self.state[node] = parts[2]
                            self.events.append(VrrpEvent(mono, wall, node, "state", parts[2]))

        t = threading.Thread(target=loop, daemon=True, name=f"vrrp-fifo-{node}")
        t.start()
        self._fifo_threads.append(t)

    def _copy_vip_events(self) -> None:
        seen = 0
        while not self._stopping and self._watch is not None:
            evs = self._watch.events
            while seen < len(evs):
                mono, wall, node, kind = evs[seen]
                with self._lock:
                    self.events.append(VrrpEvent(mono, wall, node, "vip", kind))
                seen += 1
            time.sleep(0.002)

    def vip_holders(self) -> set[str]:
        """Nodes that have the VIP configured right now (event-driven, exact)."""
        return self._watch.current() if self._watch else set()

    def holder(self) -> str | None:
        h = self.vip_holders()
        return next(iter(h)) if len(h) == 1 else None

    def states(self) -> dict[str, str]:
        """Each node's last state from its notify fifo; "DEAD" when no keepalived
        process of that node is alive (a SIGKILLed daemon says nothing)."""
        with self._lock:
            out = dict(self.state)
        if self._started:
            for node in NODES:
                if not self.keepalived_pids(node):
                    out[node] = "DEAD"
        return out

    def events_after(self, index: int) -> tuple[list[VrrpEvent], int]:
        """Events appended since `index` (arrival order) and the next index.

        `events_since` sorts by time; a follower that slices it by position
        can miss an event stamped earlier but appended later (the VIP events
        come through a copy thread), so incremental readers use this."""
        with self._lock:
            return list(self.events[index:]), len(self.events)

    def events_since(self, since: float) -> list[VrrpEvent]:
        with self._lock:
            return sorted((e for e in self.events if e.mono >= since), key=lambda e: e.mono)

    def wait_master(self, timeout: float) -> str:
        """Waits until exactly one node holds the VIP and says MASTER."""
        def ok() -> str | None:
            h = self.holder()
            return h if h is not None and self.states().get(h) == "MASTER" else None
        return _wait(ok, timeout, "no single VRRP master")

    def wait_stable(self, timeout: float = 30) -> str:
        """Waits for a steady pair: every process running (and, under a cluster,
        past Pacemaker's start second), one MASTER holding the VIP, the other
        BACKUP. Returns the master. Call it before each fault injection."""
        deadline = time.monotonic() + timeout
        if self.cluster is not None:
            for node in NODES:
                for what in ("service", "keepalived"):
                    self.cluster.wait_running(self.resource(node, what),
                                              max(1.0, deadline - time.monotonic()))

        def ok() -> str | None:
            h = self.holder()
            if h is None or self.states().get(h) != "MASTER":
                return None
            return h if self.states().get(self.other(h)) == "BACKUP" else None
        return _wait(ok, max(0.1, deadline - time.monotonic()), "no steady VRRP pair")

    def wait_event(self, node: str, kind: str, value: str, since: float,
                   timeout: float) -> VrrpEvent:
        def find() -> VrrpEvent | None:
            for e in self.events_since(since):
                if e.node == node and e.kind == kind and e.value == value:
                    return e
            return None
        return _wait(find, timeout, f"{node} {kind} {value}")

    def wait_state(self, node: str, value: str, timeout: float) -> None:
        _wait(lambda: self.states().get(node) == value or None, timeout,
              f"{node} not {value}")

    def fetch(self, timeout: float = 1.0) -> str:
        """GET http://VIP:port/ from the client namespace; returns the body
        (`ok node-a`)."""
        s = self.lan.client.socket()
        try:
            s.settimeout(timeout)
            s.connect((self.vip, self.port))
            # the backend keeps connections alive unless told otherwise
            s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        return data.split(b"\r\n\r\n", 1)[-1].decode().strip()

    # ------------------------------------------------------------ attackers
    def service_pid(self, node: str) -> int | None:
        if self.cluster is not None:
            return self.cluster.resource_pid(self.resource(node, "service"))
        p = self._procs.get(f"service-{node}")
        return p.pid if p and p.poll() is None else None

    def keepalived_pids(self, node: str) -> list[int]:
        """[parent, vrrp child] of a node's keepalived (those that are alive)."""
        out = []
        for pf in ("keepalived.pid", "vrrp.pid"):
            pid = read_pid(self._path(node, pf))
            if pid and not is_zombie(pid):
                out.append(pid)
        return out

    def kill_service(self, node: str, sig: int = signal.SIGKILL) -> float:
        """Kills the node's HTTP service. Returns time.monotonic() before the kill."""
        pid = self.service_pid(node)
        if pid is None:
            raise RuntimeError(f"service on {node} is not running")
        t = time.monotonic()
        os.kill(pid, sig)
        return t

    def kill_keepalived(self, node: str, sig: int = signal.SIGKILL) -> float:
        """Signals keepalived's parent and VRRP child (SIGKILL: the VIP stays
        configured on the dead node until keepalived starts again)."""
        pids = self.keepalived_pids(node)
        if not pids:
            raise RuntimeError(f"keepalived on {node} is not running")
        t = time.monotonic()
        if sig == signal.SIGKILL:
            # VRRP child first: killed after its parent it would get the
            # parent-death SIGTERM and leave cleanly (priority 0, VIP removed)
            for pid in reversed(pids):
                _signal(pid, sig)
        else:
            _signal(pids[0], sig)   # the parent stops its children in order
        return t

    def link_down(self, node: str) -> float:
        """Takes the node's veth down (keepalived goes FAULT). Undo: link_up."""
        t = time.monotonic()
        self.ns(node).run(["ip", "link", "set", self.lan.ifname[node], "down"])
        return t

    def link_up(self, node: str) -> float:
        t = time.monotonic()
        self.ns(node).run(["ip", "link", "set", self.lan.ifname[node], "up"])
        return t


def _wait(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v is not None and v is not False:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(0.005)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
