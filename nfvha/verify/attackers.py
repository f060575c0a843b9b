"""Attackers: inject one real fault, on a node, and note the moment.

Each attacker's `inject()` returns the monotonic time taken right before the
fault took effect (the kill syscall, the command start), which the engine
marks as the "fault" event; `recover()` undoes what can be undone
(SIGCONT, interface up, stop stress). A local pid is signalled with
os.kill (no process spawn in the timed path); on another node the signal
goes through `kill` run there.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Union

from .nodes import LocalNode, Node

PidSource = Union[int, Callable[[], Optional[int]], str]   # pid, callable, or pgrep -f pattern


async def _resolve(node: Node, target: PidSource) -> int:
    if isinstance(target, int):
        return target
    if callable(target):
        pid = target()
        if pid is None:
            raise LookupError("target process is not running")
        return pid
    pids = await node.pids(target)
    if not pids:
        raise LookupError(f"no process matches {target!r} on {node.name}")
    return pids[0]


async def _signal(node: Node, pid: int, sig: int) -> float:
    if isinstance(node, LocalNode):
        t = time.monotonic()
        os.kill(pid, sig)
        return t
    t = time.monotonic()
    rc, _, err = await node.run(["kill", f"-{int(sig)}", str(pid)])
    if rc != 0:
        raise RuntimeError(f"kill on {node.name} failed: {err.strip()}")
    return t


class Attacker:
    kind = "attacker"

    async def inject(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    async def recover(self) -> None:
        pass

    def describe(self) -> str:
        return self.kind


@dataclass
class KillProcess(Attacker):
    """kill -9: the service crash of the seed's Table 2.

    `tree=True` (local only): the process and every descendant, e.g. a WSGI
    server's master and its workers — Yardstick's kill-process kills every
    process of the service, and a worker left behind would go on serving on
    the inherited socket. The descendants are read before the first kill
    (a killed master's workers are re-parented at once)."""
    target: PidSource
    node: Node = field(default_factory=LocalNode)
    sig: int = signal.SIGKILL
    kind: str = "kill-process"
    pid: Optional[int] = None
    tree: bool = False
    killed: List[int] = field(default_factory=list)

    async def inject(self) -> float:
        self.pid = await _resolve(self.node, self.target)
        if not self.tree:
            self.killed = [self.pid]
            return await _signal(self.node, self.pid, self.sig)
        if not isinstance(self.node, LocalNode):
            raise ValueError("kill-process tree=True runs only on the local node")
        from ..subreaper import children_of
        pids, todo = [self.pid], [self.pid]
        while todo:
            kids = children_of(todo.pop())
            pids += kids
            todo += kids
        t = time.monotonic()
        for pid in pids:
            try:
                os.kill(pid, self.sig)
            except ProcessLookupError:      # a descendant that exited meanwhile
                pass
        self.killed = pids
        return t

    def describe(self) -> str:
        if self.tree and len(self.killed) > 1:
            return (f"kill -{int(self.sig)} pid {self.pid} and its descendants "
                    f"{', '.join(map(str, self.killed[1:]))} on {self.node.name}")
        return f"kill -{int(self.sig)} pid {self.pid} on {self.node.name}"


@dataclass
class FreezeProcess(Attacker):
    """SIGSTOP now, SIGCONT after `seconds` (a hung, not a dead, service)."""
    target: PidSource
    seconds: float = 2.0
    node: Node = field(default_factory=LocalNode)
    kind: str = "freeze-process"
    pid: Optional[int] = None
    thawed_at: Optional[float] = None      # monotonic, right before SIGCONT
    _thaw: Optional[asyncio.Task] = None

    async def inject(self) -> float:
        self.pid = await _resolve(self.node, self.target)
        t = await _signal(self.node, self.pid, signal.SIGSTOP)
        self._thaw = asyncio.create_task(self._later())
        return t

    async def _later(self) -> None:
        await asyncio.sleep(self.seconds)
        await self.recover()

    async def recover(self) -> None:
        if self.pid is not None and self.thawed_at is None:
            try:
                self.thawed_at = await _signal(self.node, self.pid, signal.SIGCONT)
            except (ProcessLookupError, RuntimeError):
                pass

    def describe(self) -> str:
        return f"SIGSTOP pid {self.pid} for {self.seconds} s on {self.node.name}"


@dataclass
class StopService(Attacker):
    """An orderly stop: a command (e.g. `systemctl stop X`, `crm resource stop X`)
    or, without one, SIGTERM to the process."""
    target: Optional[PidSource] = None
    command: Optional[list] = None
    node: Node = field(default_factory=LocalNode)
    kind: str = "stop-service"

    async def inject(self) -> float:
        if self.command:
            t = time.monotonic()
            rc, _, err = await self.node.run(self.command)
            if rc != 0:
                raise RuntimeError(f"{self.command} failed: {err.strip()}")
            return t
        if self.target is None:
            raise ValueError("stop-service needs a command or a target")
        return await _signal(self.node, await _resolve(self.node, self.target), signal.SIGTERM)


@dataclass
class InterfaceDown(Attacker):
    """`ip link set IF down` on a node (a namespace standing in for a host);
    up again after `seconds` (0 = only on recover())."""
    ifname: str
    node: Node = field(default_factory=LocalNode)
    seconds: float = 0.0
    kind: str = "interface-down"

    async def inject(self) -> float:
        if isinstance(self.node, LocalNode):
            # Never on this machine's own interfaces: only namespaces we made.
            raise ValueError("interface-down runs only on a namespace or remote node")
        t = time.monotonic()
        rc, _, err = await self.node.run(["ip", "link", "set", self.ifname, "down"])
        if rc != 0:
            raise RuntimeError(f"ip link set {self.ifname} down: {err.strip()}")
        if self.seconds > 0:
            asyncio.get_running_loop().call_later(
                self.seconds, lambda: asyncio.ensure_future(self.recover()))
        return t

    async def recover(self) -> None:
        await self.node.run(["ip", "link", "set", self.ifname, "up"])


@dataclass
class CpuStress(Attacker):
    """stress-ng --cpu N for `seconds` on a node (a degradation, not a crash)."""
    workers: int = 1
    seconds: float = 2.0
    node: Node = field(default_factory=LocalNode)
    kind: str = "cpu-stress"
    proc: Optional[asyncio.subprocess.Process] = None

    async def inject(self) -> float:
        t = time.monotonic()
        self.proc = await self.node.spawn(
            ["stress-ng", "--cpu", str(self.workers), "--timeout", f"{self.seconds}s", "--quiet"],
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        return t

    async def recover(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@dataclass
class DropPort(Attacker):
    """Drops every TCP packet to (and from) `port` on a node with nftables: a
    black hole, not a refusal — clients see timeouts, the process stays up.

    The rules live in a table of their own (`nfvha_drop_<port>_<id>`), so
    heal is deleting that table: nothing else on the node is touched. Refused
    on the local machine — only a namespace we made, or a remote node, ever
    gets a rule. `seconds` > 0 heals by itself; 0 = only on recover()."""
    port: int
    node: Node = field(default_factory=LocalNode)
    seconds: float = 0.0
    kind: str = "drop-port"
    table: str = ""
    applied_at: Optional[float] = None     # monotonic, when nft returned (rule in place)
    healed_at: Optional[float] = None      # monotonic, right before the heal command
    heal_done_at: Optional[float] = None   # monotonic, when it returned (rule gone)
    _heal: Optional[asyncio.TimerHandle] = None

    def __post_init__(self) -> None:
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"not a TCP port: {self.port!r}")
        self.table = self.table or f"nfvha_drop_{int(self.port)}_{os.urandom(3).hex()}"

    def ruleset(self) -> str:
        """One nft script: own table, input and output hooks, drop the port."""
        p = int(self.port)
        return (f"add table inet {self.table}; "
                f"add chain inet {self.table} in {{ type filter hook input priority -10; "
                "policy accept; }; "
                f"add chain inet {self.table} out {{ type filter hook output priority -10; "
                "policy accept; }; "
                f"add rule inet {self.table} in tcp dport {p} drop; "
                f"add rule inet {self.table} out tcp sport {p} drop")

    async def inject(self) -> float:
        if isinstance(self.node, LocalNode):
            raise ValueError("drop-port runs only on a namespace or remote node")
        t = time.monotonic()
        rc, _, err = await self.node.run(["nft", self.ruleset()])
        if rc != 0:
            raise RuntimeError(f"nft on {self.node.name} failed: {err.strip()}")
        self.applied_at = time.monotonic()
        if self.seconds > 0:
            self._heal = asyncio.get_running_loop().call_later(
                self.seconds, lambda: asyncio.ensure_future(self.recover()))
        return t

    async def recover(self) -> None:
        if self.applied_at is None or self.healed_at is not None:
            return
        if self._heal is not None:
            self._heal.cancel()
        self.healed_at = time.monotonic()
        rc, _, err = await self.node.run(["nft", "delete", "table", "inet", self.table])
        self.heal_done_at = time.monotonic()
        if rc != 0:
            raise RuntimeError(f"nft heal on {self.node.name} failed: {err.strip()}")

    def describe(self) -> str:
        return f"drop TCP port {self.port} on {self.node.name}"
