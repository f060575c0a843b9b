"""Where an attacker or a probe runs: a node, as in Yardstick's pod file.

A node only knows how to turn a command into the argv that runs it there:

- LocalNode            → the command itself
- NetnsNode("ns1")     → ip netns exec ns1 <command>
- SshNode("10.0.0.5")  → ssh -o BatchMode=yes [-i key] [-p port] user@host '<command>'
  (optionally over one multiplexed connection: `await node.connect()` starts
  an OpenSSH ControlMaster, so each command costs a round trip, not a
  handshake; `await node.close()` ends it)

Everything else (attackers, process lookups) is written once against
`Node.run`/`Node.spawn`, so the same scenario runs on this machine, in
network namespaces standing in for hosts, or on real remote hosts.
"""
from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple


class Node:
    name = "local"
    roles: Sequence[str] = ()

    def argv(self, cmd: Sequence[str]) -> List[str]:
        return list(cmd)

    async def run(self, cmd: Sequence[str], timeout: float = 15.0) -> Tuple[int, str, str]:
        """Runs a command to its end: (returncode, stdout, stderr)."""
        p = await asyncio.create_subprocess_exec(
            *self.argv(cmd), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(p.communicate(), timeout)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()
            raise
        return p.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def spawn(self, cmd: Sequence[str], **kw: object) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*self.argv(cmd), **kw)  # type: ignore[arg-type]

    async def pids(self, pattern: str) -> List[int]:
        """pids whose full command line matches `pattern` (pgrep -f) on the node."""
        rc, out, err = await self.run(["pgrep", "-f", "--", pattern])
        if rc not in (0, 1):
            # 1 = no match; anything else (ssh's 255, pgrep's 2/3) is not "none"
            raise RuntimeError(f"pgrep on {self.name} failed ({rc}): {err.strip()}")
        return [int(x) for x in out.split() if x.isdigit()] if rc == 0 else []

    async def connect(self) -> None:
        """Opens whatever the node keeps open (an ssh master); no-op here."""

    async def close(self) -> None:
        """Closes what connect() opened."""


@dataclass
class LocalNode(Node):
    name: str = "local"
    roles: Sequence[str] = ()


@dataclass
class NetnsNode(Node):
    netns: str = ""
    name: str = ""
    roles: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.name = self.name or self.netns

    def argv(self, cmd: Sequence[str]) -> List[str]:
        return ["ip", "netns", "exec", self.netns, *cmd]


@dataclass
class SshNode(Node):
    host: str = ""
    user: str = "root"
    port: int = 22
    key_filename: Optional[str] = None
    name: str = ""
    roles: Sequence[str] = ()
    options: Sequence[str] = field(default_factory=lambda: ("BatchMode=yes",
                                                            "ConnectTimeout=5"))
    extra_options: Sequence[str] = ()          # more -o KEY=VALUE (pod: ssh_options)
    config_file: Optional[str] = None          # -F FILE (e.g. /dev/null: ignore ~/.ssh/config)
    control_path: Optional[str] = None         # multiplex over one master connection

    def __post_init__(self) -> None:
        self.name = self.name or self.host

    def _base(self) -> List[str]:
        out = ["ssh"]
        if self.config_file:
            out += ["-F", self.config_file]
        for o in (*self.options, *self.extra_options):
            out += ["-o", o]
        if self.control_path:
            # ControlMaster=no: a command uses the master if it runs, else its own
            # connection — never becomes a master holding our pipes open.
            out += ["-o", f"ControlPath={self.control_path}", "-o", "ControlMaster=no"]
        if self.key_filename:
            out += ["-i", self.key_filename]
        return out + ["-p", str(self.port)]

    def argv(self, cmd: Sequence[str]) -> List[str]:
        return self._base() + [f"{self.user}@{self.host}", shlex.join(cmd)]

    async def connect(self, timeout: float = 15.0) -> None:
        if not self.control_path:
            return
        argv = self._base()
        argv[argv.index("ControlMaster=no")] = "ControlMaster=yes"
        # -f: backgrounds after authentication, so when this returns 0 the
        # master is up. It outlives this call holding its stderr: a file, not
        # a pipe (a pipe would never see EOF).
        log = f"{self.control_path}.log"
        with open(log, "ab") as errf:
            p = await asyncio.create_subprocess_exec(
                *argv, "-N", "-f", f"{self.user}@{self.host}",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=errf)
        try:
            await asyncio.wait_for(p.wait(), timeout)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()
            raise ConnectionError(f"ssh to {self.name}: no answer within {timeout} s") from None
        if p.returncode != 0:
            with open(log, errors="replace") as f:
                raise ConnectionError(f"ssh to {self.name} failed: {f.read()[-500:]}")

    async def close(self) -> None:
        if not self.control_path:
            return
        p = await asyncio.create_subprocess_exec(
            *self._base(), "-O", "exit", f"{self.user}@{self.host}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        await p.wait()


def from_pod(pod: Dict) -> Dict[str, Node]:
    """Nodes from a Yardstick-style pod file:
    `nodes: [{name, role|roles, ip, user, key_filename, ssh_port|port}]`, plus
    nfvha's `netns: NAME` (a namespace as a host), `local: true`, and for ssh
    `ssh_options: [KEY=VALUE...]`, `ssh_config: FILE`, `control_path: PATH`."""
    out: Dict[str, Node] = {}
    for n in pod.get("nodes", []):
        roles = n.get("roles") or ([n["role"]] if "role" in n else [])
        name = n["name"]
        if n.get("local"):
            out[name] = LocalNode(name=name, roles=roles)
        elif n.get("netns"):
            out[name] = NetnsNode(netns=n["netns"], name=name, roles=roles)
        else:
            out[name] = SshNode(host=n["ip"], user=n.get("user", "root"),
                                port=int(n.get("ssh_port", n.get("port", 22))),
                                key_filename=n.get("key_filename"), name=name, roles=roles,
                                extra_options=tuple(n.get("ssh_options", ())),
                                config_file=n.get("ssh_config"),
                                control_path=n.get("control_path"))
    return out
