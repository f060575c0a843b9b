"""Network-namespace helpers for the verification deployments (synchronous).

Every name carries a short random run id so that parallel test runs never
collide; interface names stay within Linux's 15-character limit. Nothing
here ever adds an address outside a namespace this module created.

Sockets inside a namespace: `ns_socket(name)` creates the socket in a
short-lived thread that has joined the namespace (setns affects only the
calling thread), so probes can talk to a VIP from the main process.
"""
from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def run_id(length: int = 4) -> str:
    """A short random hex id, e.g. 'a3f9'."""
    return secrets.token_hex((length + 1) // 2)[:length]


def sh(argv: Sequence[str], check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(argv), check=check, timeout=timeout, capture_output=True, text=True
    )


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def pids_in(name: str) -> list[int]:
    """Processes whose network namespace is `name` (what `ip netns pids` says)."""
    res = sh(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in res.stdout.split()]


def _kill_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class NetNS:
    """One named network namespace with its loopback up.

    `delete()` first SIGTERMs then SIGKILLs every process still inside: a
    namespace with a live process survives `ip netns delete` (only its name
    goes), and its veth and addresses with it.
    """

    def __init__(self, name: str):
        if len(name) > 32:
            raise ValueError(f"namespace name too long: {name}")
        self.name = name

    def create(self) -> NetNS:
        sh(["ip", "netns", "add", self.name])
        self.run(["ip", "link", "set", "lo", "up"])
        return self

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """argv wrapped so it runs inside this namespace (exec, same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 15):
        return sh(self.exec_argv(argv), check=check, timeout=timeout)

    def popen(self, argv: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.exec_argv(argv), **kw)

    def delete(self, grace: float = 2.0) -> None:
        if not exists(self.name):
            return
        pids = pids_in(self.name)
        _kill_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = pids_in(self.name)
        # SIGKILL until none is left: a process may still be entering (an
        # `ip netns exec` between its setns and its exec) after the first look
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            _kill_all(pids, signal.SIGKILL)
            time.sleep(0.02)
            pids = pids_in(self.name)
        sh(["ip", "netns", "delete", self.name], check=False)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        return ns_socket(self.name, family, type)

    def __repr__(self) -> str:
        return f"NetNS({self.name!r})"


def ns_socket(
    name: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM
) -> socket.socket:
    """A socket that lives in namespace `name` (usable from this process)."""
    result: list = []

    def make() -> None:
        try:
            with open(NETNS_DIR / name) as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({name}): {os.strerror(err)}")
            result.append(socket.socket(family, type))
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    # A throw-away thread: it ends inside the namespace, the caller never moves.
    t = threading.Thread(target=make, name=f"setns-{name}")
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def veth(ns_a: NetNS, if_a: str, ns_b: NetNS, if_b: str) -> None:
    """A veth pair with one end in each namespace, both ends up."""
    for n in (if_a, if_b):
        if len(n) > 15:
            raise ValueError(f"interface name too long: {n}")
    sh(["ip", "link", "add", if_a, "netns", ns_a.name, "type", "veth",
        "peer", "name", if_b, "netns", ns_b.name])
    ns_a.run(["ip", "link", "set", if_a, "up"])
    ns_b.run(["ip", "link", "set", if_b, "up"])


class Lan:
    """Two node namespaces and a client namespace on one L2 segment.

    Topology (all inside namespaces created here):
      node a: `<rid>a0` 10.213.<net>.1/24 ─┐
      node b: `<rid>b0` 10.213.<net>.2/24 ─┴─ bridge `<rid>br` in the client
      namespace, 10.213.<net>.10/24
    The client namespace is where probes run: VRRP peers see each other's
    multicast through the bridge, and clients reach the VIP.
    """

    def __init__(self, rid: str | None = None, net: int = 0):
        self.rid = rid or run_id()
        self.prefix = f"nfvha-{self.rid}"
        self.net = net
        self.nodes: dict[str, NetNS] = {
            "a": NetNS(f"{self.prefix}-a"),
            "b": NetNS(f"{self.prefix}-b"),
        }
        self.client = NetNS(f"{self.prefix}-c")
        self.ifname = {"a": f"nh{self.rid}a0", "b": f"nh{self.rid}b0"}
        self.addr = {"a": f"10.213.{net}.1", "b": f"10.213.{net}.2"}
        self.client_addr = f"10.213.{net}.10"
        self.bridge = f"nh{self.rid}br"

    def create(self) -> Lan:
        try:
            self.client.create()
            self.client.run(["ip", "link", "add", self.bridge, "type", "bridge"])
            # No STP/forward delay: ports forward at once.
            self.client.run(["ip", "link", "set", self.bridge, "type", "bridge",
                             "forward_delay", "0", "stp_state", "0"])
            self.client.run(["ip", "addr", "add", f"{self.client_addr}/24", "dev", self.bridge])
            self.client.run(["ip", "link", "set", self.bridge, "up"])
            for key, ns in self.nodes.items():
                ns.create()
                port = f"nh{self.rid}{key}1"
                veth(ns, self.ifname[key], self.client, port)
                ns.run(["ip", "addr", "add", f"{self.addr[key]}/24", "dev", self.ifname[key]])
                self.client.run(["ip", "link", "set", port, "master", self.bridge])
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        for ns in (*self.nodes.values(), self.client):
            ns.delete()

    def __enter__(self) -> Lan:
        return self.create()

    def __exit__(self, *exc) -> None:
        self.delete()


def addresses(ns: NetNS, ifname: str) -> list[str]:
    """IPv4 addresses (without prefix length) on `ifname` inside `ns`."""
    res = ns.run(["ip", "-4", "-o", "addr", "show", "dev", ifname], check=False)
    out = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            out.append(parts[parts.index("inet") + 1].split("/")[0])
    return out


# --- IPv4 address events over rtnetlink (no polling, no subprocess) ---------

NETLINK_ROUTE = 0
RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_DONE, NLMSG_ERROR = 3, 2
IFA_LOCAL, IFA_ADDRESS = 2, 1


def _parse_addr_msgs(data: bytes) -> list[tuple[int, int, str]]:
    """(msg type, ifindex, dotted address) for each RTM_NEW/DELADDR in `data`."""
    import struct

    out = []
    off = 0
    while off + 16 <= len(data):
        length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16 or off + length > len(data):
            break   # truncated or nonsense header: stop, never read past the buffer
        if mtype in (RTM_NEWADDR, RTM_DELADDR) and length >= 24:
            family, _plen, _fl, _scope, index = struct.unpack_from("=BBBBI", data, off + 16)
            a = off + 24
            local = addr = None
            while a + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4 or a + alen > off + length:
                    break
                val = data[a + 4:a + alen]
                if family == socket.AF_INET and len(val) == 4:
                    if atype == IFA_LOCAL:
                        local = socket.inet_ntoa(val)
                    elif atype == IFA_ADDRESS:
                        addr = socket.inet_ntoa(val)
                a += (alen + 3) & ~3
            if local or addr:
                out.append((mtype, index, local or addr))
        off += (length + 3) & ~3
    return out


def dump_addresses(ns_name: str) -> set[str]:
    """All IPv4 addresses configured inside a namespace (one netlink dump)."""
    import struct

    s = ns_socket(ns_name, socket.AF_NETLINK, socket.SOCK_RAW)
    try:
        s.bind((0, 0))
        req = struct.pack("=IHHII", 16 + 8, RTM_GETADDR, 0x1 | 0x300, 1, 0)
        req += struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)
        s.send(req)
        found: set[str] = set()
        while True:
            data = s.recv(65536)
            for mtype, _idx, address in _parse_addr_msgs(data):
                if mtype == RTM_NEWADDR:
                    found.add(address)
            # a multi-part dump ends with an NLMSG_DONE (or an error)
            off = 0
            while off + 16 <= len(data):
                ln, mt = struct.unpack_from("=IH", data, off)
                if mt in (NLMSG_DONE, NLMSG_ERROR):
                    return found
                off += max((ln + 3) & ~3, 16)
    finally:
        s.close()


class AddressWatch:
    """Timestamps every add/remove of one IPv4 address in several namespaces.

    One thread per namespace blocks on an rtnetlink socket subscribed to
    RTMGRP_IPV4_IFADDR, so an event is stamped within the scheduling delay
    (≪ 1 ms on an idle machine), not at a polling step.

    events: list of (time.monotonic(), time.time(), ns key, "add"|"del").
    """

    def __init__(self, address: str, namespaces: dict[str, str]):
        self.address = address
        self.namespaces = namespaces      # key -> namespace name
        self.events: list[tuple[float, float, str, str]] = []
        self.holders: set[str] = set()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = False

    def start(self) -> AddressWatch:
        for key, ns_name in self.namespaces.items():
            s = ns_socket(ns_name, socket.AF_NETLINK, socket.SOCK_RAW)
            s.bind((0, RTMGRP_IPV4_IFADDR))
            s.settimeout(0.2)
            self._socks.append(s)
            # subscribe first, then take the snapshot: no event can fall between
            if self.address in dump_addresses(ns_name):
                self.holders.add(key)
            t = threading.Thread(target=self._loop, args=(key, s), daemon=True,
                                 name=f"addrwatch-{key}")
            t.start()
            self._threads.append(t)
        return self

    def _loop(self, key: str, s: socket.socket) -> None:
        while not self._stop:
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            mono, wall = time.monotonic(), time.time()
            for mtype, _idx, address in _parse_addr_msgs(data):
                if address != self.address:
                    continue
                kind = "add" if mtype == RTM_NEWADDR else "del"
                with self._lock:
                    if kind == "add":
                        self.holders.add(key)
                    else:
                        self.holders.discard(key)
                    self.events.append((mono, wall, key, kind))

    def current(self) -> set[str]:
        with self._lock:
            return set(self.holders)

    def wait_for(self, predicate, timeout: float) -> bool:
        """Waits until predicate(holders) is true; checks every 5 ms."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.current()):
                return True
            time.sleep(0.005)
        return predicate(self.current())

    def stop(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join(timeout=1)
        for s in self._socks:
            s.close()
