"""Server-group broadcast delivery latency over RabbitMQ: 10 and 100 peers
across 2 and 10 compute agents.

The controller (``nfvha controller``) and every compute agent (``nfvha
compute``) run as separate processes over the local RabbitMQ (an exchange
of their own per run). The guests are simulated in this process as raw
StarlingX-wire peers: each plays QEMU's ``cgcs.messaging.<name>.sock``
socket, so the compute agents connect to them exactly as to QEMU. One
sender on the first compute broadcasts; peers are spread round robin over
the computes (a 10-peer group on 10 computes: one peer per compute).

Latency = the sender's write of the broadcast -> a peer reading it, on this
machine's monotonic clock (one process, so one clock), for every (broadcast,
peer) pair. The path: guest -> compute agent -> RabbitMQ -> controller ->
RabbitMQ (one cast per compute host) -> compute agent -> guest.

    python bench/servergroup_latency.py [--quick] [--broadcasts N] [--json]

All figures come from this run; nothing is stored.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _common import pct, rabbitmq_unreachable  # noqa: E402

URL = os.environ.get("NFVHA_TEST_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
SIZES = [(10, 2), (100, 2), (10, 10), (100, 10)]  # (peers, computes)


class Peer(asyncio.Protocol):
    """One simulated guest: QEMU's listening socket and the guest behind it."""

    def __init__(self, name: str, inbox: dict[str, dict[str, float]],
                 arrived: asyncio.Event | None = None) -> None:
        self.name = name
        self.inbox = inbox  # broadcast data -> {peer name: monotonic time read}
        self.arrived = arrived  # set on every delivery: the driver waits, never polls
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.server: asyncio.AbstractServer | None = None
        self.connected = asyncio.Event()

    async def listen(self, path: Path) -> None:
        self.server = await asyncio.get_running_loop().create_unix_server(
            lambda: self, str(path))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connected.set()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            d = json.loads(line).get("data", {})
            if d.get("msg_type") == "broadcast":
                self.inbox.setdefault(d["data"], {})[self.name] = now
                if self.arrived is not None:
                    self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.connected.clear()

    def broadcast(self, data: str) -> None:
        assert self.transport is not None
        msg = {"version": 2, "source_addr": "cgcs.server_grp", "dest_addr": "cgcs.server_grp",
               "data": {"version": 2, "msg_type": "broadcast", "data": data}}
        self.transport.write(b"\n" + json.dumps(msg).encode() + b"\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _spawn(args: list[str], log: Path) -> asyncio.subprocess.Process:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.cli.main", *args, stdout=out, stderr=out, cwd=str(ROOT))


async def _http(port: int, method: str, path: str, body: Any = None) -> Any:
    import httpx

    deadline = time.monotonic() + 60  # the controller may still be starting
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        while True:
            try:
                r = await c.request(method, path, json=body)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        r.raise_for_status()
        return r.json()


async def run_computes(tmp: Path, computes: int, max_peers: int, groups: list[int],
                       broadcasts: int, warmup: int) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    port = _free_port()
    common = tmp / "common.conf"
    common.write_text(
        f"[DEFAULT]\ncontrol_exchange = nfvha-bench-{run}\n"
        f"[bus]\ntransport_url = {URL}\n"
        f"[database]\nconnection = sqlite:///{tmp / 'db.sqlite'}\n"
        f"[api]\nport = {port}\n"
        # the sender and up to 100 peers: one more than the REST API's default
        "[servergroup]\nmax_members = 1000\n")
    inbox: dict[str, dict[str, float]] = {}
    arrived = asyncio.Event()
    dirs = []
    for c in range(computes):
        d = tmp / f"c{c}"
        d.mkdir()
        dirs.append(d)
        (tmp / f"c{c}.conf").write_text(f"[DEFAULT]\nhost = bench-c{c}\n"
                                        f"[heartbeat]\ninstances_dir = {d}\n")
    sender = Peer("sender", inbox)
    await sender.listen(dirs[0] / "cgcs.messaging.sender.sock")
    peers = []
    for i in range(max_peers):
        p = Peer(f"p{i:03d}", inbox, arrived)
        await p.listen(dirs[i % computes] / f"cgcs.messaging.p{i:03d}.sock")
        peers.append(p)
    log = tmp / "services.log"
    procs = [await _spawn(["controller", "--config-file", str(common)], log)]
    results = []
    try:
        for c in range(computes):
            procs.append(await _spawn(["compute", "--config-file", str(common),
                                       "--config-file", str(tmp / f"c{c}.conf")], log))
        for p in [sender, *peers]:
            await asyncio.wait_for(p.connected.wait(), 120)
        for n in groups:
            members = [p.name for p in peers[:n]]
            await _http(port, "PUT", "/v1/server-groups/bench",
                        {"name": "bench", "members": ["sender", *members]})
            deadline = time.monotonic() + 60
            while True:  # every member placed (compute agents announce their instances)
                g = await _http(port, "GET", "/v1/server-groups/bench")
                if all(m["host"] for m in g["members"]):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"members not placed: {g}")
                await asyncio.sleep(0.2)
            lat: list[float] = []
            lost = 0
            for i in range(warmup + broadcasts):
                key = f"n{n}-b{i}-{uuid.uuid4().hex[:6]}"
                t0 = time.monotonic()
                sender.broadcast(key)
                end = t0 + 2.0
                # Wait on deliveries rather than poll: a polling driver would
                # compete for the two cores with what it measures.
                while len(inbox.get(key, {})) < n and time.monotonic() < end:
                    arrived.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(arrived.wait(), end - time.monotonic())
                got = inbox.pop(key, {})
                if i >= warmup:
                    lat += [(t - t0) * 1000 for t in got.values()]
                    lost += n - len(got)
                # stay under the guest rate limit (20/s sustained)
                await asyncio.sleep(max(0.0, 0.07 - (time.monotonic() - t0)))
            results.append({"peers": n, "computes": computes, "broadcasts": broadcasts,
                            "deliveries": len(lat), "lost": lost,
                            "median_ms": statistics.median(lat) if lat else None,
                            "p99_ms": pct(lat, 0.99), "max_ms": max(lat) if lat else None})
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except asyncio.TimeoutError:
                p.kill()
                await p.wait()
        for p in [sender, *peers]:
            if p.server is not None:
                p.server.close()
            if p.transport is not None:
                p.transport.close()
    return results


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for computes in sorted({c for _, c in args.sizes}):
        groups = [n for n, c in args.sizes if c == computes]
        tmp = Path(tempfile.mkdtemp(prefix="nfvha-sgb-", dir="/tmp"))
        try:
            results += await run_computes(tmp, computes, max(groups), groups,
                                          args.broadcasts, args.warmup)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(a), int(b)) for a, b in (part.split("x") for part in text.split(","))]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected PEERSxCOMPUTES,...: {text!r}") from exc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer broadcasts (smoke run)")
    p.add_argument("--broadcasts", type=int, default=None,
                   help="measured broadcasts per configuration (default 200, quick 20)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.add_argument("--sizes", type=_sizes, default=SIZES,
                   help="PEERSxCOMPUTES,... (default: 10x2,100x2,10x10,100x10)")
    args = p.parse_args()
    if args.broadcasts is None:
        args.broadcasts = 20 if args.quick else 200
    why = rabbitmq_unreachable()
    if why:
        print(why)
        return 0
    print(f"server-group broadcast delivery latency over RabbitMQ, {args.broadcasts} "
          f"broadcasts per row (guest write -> every peer read)")
    results = asyncio.run(amain(args))
    print(f"{'peers':>5} {'computes':>8} {'deliveries':>10} {'lost':>5} "
          f"{'median ms':>9} {'p99 ms':>7} {'max ms':>7}")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    ok = True
    for r in sorted(results, key=lambda r: (r["computes"], r["peers"])):
        print(f"{r['peers']:>5} {r['computes']:>8} {r['deliveries']:>10} {r['lost']:>5} "
              f"{fmt(r['median_ms']):>9} {fmt(r['p99_ms']):>7} {fmt(r['max_ms']):>7}")
        ok &= r["lost"] == 0
    target = all(r["p99_ms"] is not None and r["p99_ms"] < 20 for r in results)
    print(f"target p99 < 20 ms: {'met' if target else 'NOT met'} on this run")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
