"""Simulated guests for tests and benchmarks of the compute agent.

Each simulated guest is a UNIX socket *server* standing in for QEMU's
listening chardev (``-chardev socket,server=on``) together with a minimal
guest that speaks StarlingX heartbeat v3 on it: it registers (init) and
answers every challenge. Many guests share one process and one asyncio
loop, so a benchmark can put a thousand guests in a few processes apart
from the compute agent it measures.

Not the real guest agent (nfvha.guest): it exists to be cheap, and to be
*hostile* on demand: flood, wrong nonces, oversized lines, byte-at-a-time.

    python -m nfvha.compute.simguest --dir D --count N [--behaviour B] [--interval-ms I]

Prints ``{"ready": [uuid, ...]}`` once listening. Commands on stdin, one a
line: ``hang <uuid|all>`` (stop answering; prints ``{"hung": uuid, "mono": t}``
with the time.monotonic() of the hang), ``resume <uuid|all>``,
``close <uuid>`` (close the connection and remove the socket), ``unhealthy
<uuid|all>`` / ``healthy <uuid|all>`` (answer challenges with that health;
prints ``{"unhealthy": uuid, "mono": t}`` / ``{"healthy": ...}``), ``quit``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

BEHAVIOURS = ("normal", "flood", "wrongnonce", "bigline", "bytewise", "silent")


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # made once, not per message
# A normal guest's answer, formatted: the guests stand in for VMs that each
# have a CPU of their own, so they should cost the machine as little as can be.
_ANSWER = (b'\n{"version":3,"revision":1,"msg_type":"challenge_response","sequence":%d,'
           b'"heartbeat_response":%d,"heartbeat_health":"%s","corrective_action":"reboot",'
           b'"log_msg":""}\n')


def _encode(msg: dict[str, Any]) -> bytes:
    return b"\n" + _ENCODE(msg).encode() + b"\n"


class SimGuest(asyncio.Protocol):
    def __init__(self, sim: Simulator, uuid: str) -> None:
        self.sim = sim
        self.uuid = uuid
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.seq = 0
        self.invocation_id = random.randrange(1, 2**31)
        self.hung = False
        self.health = "healthy"
        self._hostile: asyncio.TimerHandle | None = None
        self._burst: bytes | None = None

    def _msg(self, msg_type: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"version": 3, "revision": 1, "msg_type": msg_type, "sequence": self.seq,
                **fields}

    def _init(self) -> dict[str, Any]:
        return self._msg("init", invocation_id=self.invocation_id, name="simguest",
                         heartbeat_interval_ms=self.sim.interval_ms, vote_secs=10,
                         shutdown_notice_secs=10, suspend_notice_secs=10,
                         resume_notice_secs=10, restart_secs=60, corrective_action="reboot")

    # -- protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.transport is not None:  # QEMU takes one client at a time
            transport.close()
            return
        self.transport = transport
        self.buf = b""
        self.send(self._init())
        if self.sim.behaviour in ("flood", "bigline"):
            self._hostile = asyncio.get_running_loop().call_later(0.2, self._attack)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._hostile is not None:
            self._hostile.cancel()
            self._hostile = None

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        *lines, self.buf = data.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            self.on_message(msg)

    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("msg_type")
        if kind == "nack":
            self.send(self._init())
        elif kind == "challenge" and not self.hung and self.sim.behaviour != "silent":
            nonce = msg.get("heartbeat_challenge", 0)
            if self.sim.behaviour == "wrongnonce":
                nonce = (nonce + 1) & 0x7FFFFFFF
            self.seq += 1
            if type(nonce) is not int:
                nonce = 0
            reply = _ANSWER % (self.seq, nonce, self.health.encode())
            if self.sim.behaviour == "bytewise":
                self.send_bytewise(reply)
            elif self.transport is not None:
                self.transport.write(reply)

    # -- output ---------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(_encode(msg))

    def send_bytewise(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()

        def one(i: int) -> None:
            if self.transport is None or i >= len(data):
                return
            self.transport.write(data[i:i + 1])
            loop.call_later(0.0005, one, i + 1)

        one(0)

    def _attack(self) -> None:
        """Once a second: 10k messages in one burst, or a 1 MB line."""
        if self.transport is None:
            return
        if self.sim.behaviour == "flood":
            if self._burst is None:  # built once: the attack should cost the attacker little
                self._burst = b"".join(_encode(self._msg(
                    "challenge_response", heartbeat_response=random.randrange(2**31),
                    heartbeat_health="healthy", corrective_action="reboot", log_msg=""))
                    for _ in range(self.sim.flood_count))
            self.transport.write(self._burst)
        elif self.sim.behaviour == "bigline":
            self.transport.write(b"{" + b"x" * (1024 * 1024) + b"}\n")
        self._hostile = asyncio.get_running_loop().call_later(1.0, self._attack)


class Simulator:
    def __init__(self, directory: Path, count: int, behaviour: str, interval_ms: int,
                 flood_count: int = 10000) -> None:
        self.directory = directory
        self.count = count
        self.behaviour = behaviour
        self.interval_ms = interval_ms
        self.flood_count = flood_count
        self.guests: dict[str, SimGuest] = {}
        self.servers: dict[str, asyncio.AbstractServer] = {}

    def path(self, uuid: str) -> Path:
        return self.directory / f"cgcs.heartbeat.{uuid}.sock"

    async def start(self, uuids: list[str] | None = None) -> list[str]:
        uuids = uuids or [str(uuidlib.uuid4()) for _ in range(self.count)]
        loop = asyncio.get_running_loop()
        for u in uuids:
            guest = SimGuest(self, u)
            self.guests[u] = guest
            self.servers[u] = await loop.create_unix_server(lambda g=guest: g, str(self.path(u)))
        return uuids

    def hang(self, which: str, flag: bool) -> list[str]:
        chosen = list(self.guests) if which == "all" else [which]
        for u in chosen:
            if u in self.guests:
                self.guests[u].hung = flag
        return chosen

    def set_health(self, which: str, health: str) -> list[str]:
        chosen = list(self.guests) if which == "all" else [which]
        for u in chosen:
            if u in self.guests:
                self.guests[u].health = health
        return chosen

    async def close(self, u: str) -> None:
        server = self.servers.pop(u, None)
        guest = self.guests.get(u)
        if server is not None:
            server.close()
        if guest is not None and guest.transport is not None:
            guest.transport.close()
        try:
            os.unlink(self.path(u))
        except FileNotFoundError:
            pass

    async def stop(self) -> None:
        for u in list(self.servers):
            await self.close(u)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    sim = Simulator(Path(args.dir), args.count, args.behaviour, args.interval_ms,
                    args.flood_count)
    uuids = await sim.start(args.uuid or None)
    print(json.dumps({"ready": uuids}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        cmd, arg = line[0], (line[1] if len(line) > 1 else "all")
        if cmd in ("hang", "resume"):
            mono = time.monotonic()
            for u in sim.hang(arg, cmd == "hang"):
                print(json.dumps({"hung" if cmd == "hang" else "resumed": u, "mono": mono}),
                      flush=True)
        elif cmd in ("unhealthy", "healthy"):
            mono = time.monotonic()
            for u in sim.set_health(arg, cmd):
                print(json.dumps({cmd: u, "mono": mono}), flush=True)
        elif cmd == "close":
            await sim.close(arg)
            print(json.dumps({"closed": arg, "mono": time.monotonic()}), flush=True)
    await sim.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--uuid", action="append", help="use these instance uuids (repeatable)")
    p.add_argument("--behaviour", choices=BEHAVIOURS, default="normal")
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--flood-count", type=int, default=10000)
    asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
