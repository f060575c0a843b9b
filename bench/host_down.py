"""A compute host dies: how fast every VM on it is reported ``host_down``.

A real compute agent (``nfvha compute``) runs inside a network namespace,
its "host": a veth to the root namespace carries its management address
(10.251.N.2) and its bus connection (a relay on 10.251.N.1:5672 to the
local RabbitMQ, which listens on 127.0.0.1 only). It heartbeats VMS
simulated guests (nfvha.compute.simguest). The controller runs in this
process, in the root namespace, with the host-failure monitor probing the
management address (TCP port 22: nobody listens there, a live host
refuses, which counts as an answer) and a sink that records when each
event reaches it.

- ``host``: the agent and its guests are killed and the host's link taken
  down (the host and its address are gone). Printed: agent kill → silent →
  decision, and decision → each of the VMs' host_down reaching the sink
  (the last one is the figure; OPNFV Doctor's best published: 0.58 s for
  50 VMs).
- ``agent``: only the agent is killed, the host still answers: no
  host_down; the host is shown silent, agent only.

    python bench/host_down.py [--vms 50] [--rounds 3] [--quick] [--json]

Needs root, ``ip`` and RabbitMQ at 127.0.0.1:5672.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct, rabbitmq_unreachable  # noqa: E402

RABBIT = ("127.0.0.1", 5672)
REPORT_S = 0.5       # the agent's alive fanout
DOWN_S = 1.5         # silent after this
PROBE_PORT = 22


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=30)


class Relay:
    """TCP relay from the root side of the veth to the local RabbitMQ."""

    def __init__(self, listen: str, port: int) -> None:
        self.listen, self.port = listen, port
        self.server: Optional[asyncio.AbstractServer] = None
        self.conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.listen, self.port)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*RABBIT)
        except OSError:
            w.close()
            return
        self.conns |= {w, uw}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(r, uw), pump(ur, w))
        self.conns -= {w, uw}

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in list(self.conns):
            w.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


class Host:
    """One compute host: a namespace, a veth, an agent and its guests."""

    def __init__(self, workdir: Path, vms: int, net: int) -> None:
        self.rid = secrets.token_hex(2)
        self.ns = f"nfvhahd{self.rid}"
        self.name = f"hd-{self.rid}"
        self.outer, self.inner = f"hd{self.rid}r", f"hd{self.rid}h"
        self.gw, self.addr = f"10.251.{net}.1", f"10.251.{net}.2"
        self.workdir = workdir
        self.vms = vms
        self.relay = Relay(self.gw, RABBIT[1])
        self.agent: Optional[asyncio.subprocess.Process] = None
        self.guests: Optional[asyncio.subprocess.Process] = None
        self.uuids: list[str] = []

    def up(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner,
           "netns", self.ns)
        sh("ip", "addr", "add", f"{self.gw}/30", "dev", self.outer)
        sh("ip", "link", "set", self.outer, "up")
        sh("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.addr}/30", "dev",
           self.inner)
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.inner, "up")

    async def start(self, prefix: str) -> None:
        await self.relay.start()
        inst = self.workdir / "instances"
        inst.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "guests.log", "ab")  # noqa: SIM115 - the child's
        self.guests = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfvha.compute.simguest", "--dir", str(inst),
            "--count", str(self.vms), "--interval-ms", "1000",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        assert self.guests.stdout is not None
        line = await asyncio.wait_for(self.guests.stdout.readline(), 60)
        self.uuids = json.loads(line)["ready"]
        conf = self.workdir / "compute.conf"
        conf.write_text(
            f"[DEFAULT]\nhost = {self.name}\ncontrol_exchange = {prefix}\n"
            f"[bus]\ntransport_url = rabbit://guest:guest@{self.gw}:{RABBIT[1]}/\n"
            f"[heartbeat]\ninstances_dir = {inst}\nspool_dir =\n"
            f"agent_report_interval_s = {REPORT_S}\n"
            f"[compute]\nmanagement_address = {self.addr}\n")
        alog = open(self.workdir / "agent.log", "ab")  # noqa: SIM115 - the child's
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.agent = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.ns, sys.executable, "-m", "nfvha.cli.main",
            "compute", "--config-file", str(conf), stdout=alog, stderr=alog, env=env,
            cwd=str(ROOT))

    def kill_agent(self) -> float:
        """SIGKILL the agent (ip netns exec execs it: same pid)."""
        assert self.agent is not None
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.agent.send_signal(signal.SIGKILL)
        return t

    def kill_host(self) -> float:
        """The whole host goes: agent, guests, its network."""
        t = self.kill_agent()
        if self.guests is not None:
            with contextlib.suppress(ProcessLookupError):
                self.guests.send_signal(signal.SIGKILL)
        # its network goes: the link down (no carrier on our side either). Not
        # the namespace deleted: its address would then route by the default
        # gateway, where whatever answers (a proxy, another host) would say "up"
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.inner, "down",
           check=False)
        return t

    async def stop(self) -> None:
        for p in (self.agent, self.guests):
            if p is not None and p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGKILL)
                await p.wait()
        await self.relay.stop()
        sh("ip", "netns", "delete", self.ns, check=False)
        sh("ip", "link", "delete", self.outer, check=False)


class RecordingSink:
    """A sink that acknowledges at once and keeps when each event arrived."""
    name = "recorder"

    def __init__(self) -> None:
        self.got: dict[str, tuple[float, dict[str, Any]]] = {}

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        self.got.setdefault(event["id"], (time.monotonic(), event))
        return None

    def host_down(self, host: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.got.values()
                if e["kind"] == "host_down" and e["host"] == host]


def free_net() -> int:
    """N of a 10.251.N.0/30 no route of this machine uses (runs side by side)."""
    import random

    used = sh("ip", "-4", "route", "show", "table", "all").stdout
    for _ in range(100):
        n = random.randrange(1, 255)
        if f"10.251.{n}." not in used:
            return n
    raise RuntimeError("no free 10.251.N.0/30")


async def run_case(case: str, vms: int, workdir: Path, net: Optional[int] = None,
                   timeout_s: float = 60.0) -> dict[str, Any]:
    """One host killed (case ``host``) or only its agent (``agent``)."""
    net = free_net() if net is None else net
    from nfvha.bus import make_bus
    from nfvha.controller.hostfailure import HostDownRules, HostFailureMonitor, TcpProbe
    from nfvha.controller.service import Controller

    prefix = f"nfvha-hd-{secrets.token_hex(3)}"
    host = Host(workdir, vms, net)
    bus = make_bus("rabbit://guest:guest@127.0.0.1:5672/", prefix=prefix)
    sink = RecordingSink()
    controller = Controller(f"sqlite:///{workdir / 'c.db'}", [sink], bus=bus,
                            agent_down_after_s=DOWN_S, controller_id=f"ctl-{prefix}")
    reports: list[Any] = []
    silent_at: list[float] = []
    controller.listeners.append(
        lambda w: silent_at.append(time.monotonic())
        if w["type"] == "host" and w["state"] == "silent" else None)
    out: dict[str, Any] = {"case": case, "vms": vms}
    try:
        host.up()
        await bus.start()
        await controller.start()

        async def instances_of(h: str) -> list[dict[str, Any]]:
            return [i for i in await controller.list_instances() if i["host"] == h]

        monitor = HostFailureMonitor(
            HostDownRules(recheck_interval_s=1.0),
            probe=TcpProbe(PROBE_PORT, count=3, interval_s=0.2, timeout_s=0.5),
            instances_of=instances_of, emit=controller.emit, liveness=controller.hosts)
        monitor.listeners.append(reports.append)
        controller.host_failure = monitor
        await bus.serve_controller(controller)
        await host.start(prefix)
        assert host.agent is not None

        # the agent heartbeats its guests and the controller knows them all
        deadline = time.monotonic() + timeout_s
        while True:
            hosts = {h["host"]: h for h in await controller.list_hosts()}
            h = hosts.get(host.name)
            enabled = [i for i in await controller.list_instances()
                       if i["host"] == host.name and i["heartbeat"]["state"] == "enabled"]
            if h and h["state"] == "up" and h["management_address"] == host.addr \
                    and len(enabled) == vms:
                break
            if time.monotonic() > deadline or host.agent.returncode is not None:
                raise RuntimeError(f"host never ready: {h}, {len(enabled)} enabled; agent "
                                   f"log: {(workdir / 'agent.log').read_text()[-2000:]}")
            await asyncio.sleep(0.1)

        killed = host.kill_host() if case == "host" else host.kill_agent()
        deadline = time.monotonic() + timeout_s
        if case == "host":
            while not (reports and len(sink.host_down(host.name)) >= vms):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not all reported: {len(sink.host_down(host.name))} "
                                       f"of {vms}; reports {reports}")
                await asyncio.sleep(0.01)
            r = reports[0]
            arrived = sorted(t - r.decided_mono for t, _ in sink.host_down(host.name))
            out.update({
                "reported": len(arrived),
                "kill_to_silent_s": (silent_at[0] - killed) if silent_at else None,
                "silent_to_decision_s": (r.decided_mono - silent_at[0]) if silent_at else None,
                "decision_to_stored_s": r.stored_mono - r.decided_mono,
                "decision_to_first_report_s": arrived[0],
                "decision_to_last_report_s": arrived[-1],
                "why": r.why})
        else:
            while controller.hosts is None or \
                    controller.hosts.hosts[host.name].host_failure != "agent_only":
                if time.monotonic() > deadline:
                    raise RuntimeError("the host was never found agent-only")
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.5)  # two more rechecks: still nothing
            [h] = [x for x in await controller.list_hosts() if x["host"] == host.name]
            out.update({"reported": len(sink.host_down(host.name)), "state": h["state"],
                        "host_failure": h["host_failure"],
                        "why": h["host_failure_reason"]})
    finally:
        await host.stop()
        await controller.stop()
        await bus.stop()
    return out


def _skip_reason() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not any(Path(d, "ip").exists() for d in ("/usr/sbin", "/sbin", "/usr/bin")):
        return "needs ip (iproute2)"
    return rabbitmq_unreachable()


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"vms": args.vms, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="nfvha-hd-", dir="/tmp") as tmp:
        for i in range(args.rounds):
            d = Path(tmp) / f"host-{i}"
            d.mkdir()
            results["rounds"].append(await run_case("host", args.vms, d))
        d = Path(tmp) / "agent"
        d.mkdir()
        results["agent_only"] = await run_case("agent", args.vms, d)
    lasts = [r["decision_to_last_report_s"] for r in results["rounds"]]
    results["decision_to_last_report_s"] = {"median": pct(lasts, 0.5), "max": max(lasts)}
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="one round (make bench --quick)")
    args = p.parse_args()
    if args.quick:
        args.rounds = 1
    why = _skip_reason()
    if why:
        print(json.dumps({"skipped": why}) if args.json else f"skipped: {why}")
        return 0
    res = asyncio.run(_main(args))
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"host down, {args.vms} VMs on it, {args.rounds} rounds "
          f"(agent silent after {DOWN_S} s; probe: 3 TCP connects 0.2 s apart, 0.5 s "
          f"each)")
    print(f"{'round':>5} {'kill->silent':>13} {'silent->decision':>17} "
          f"{'decision->stored':>17} {'decision->first':>16} {'decision->last':>15}")
    for i, r in enumerate(res["rounds"]):
        print(f"{i + 1:>5} {r['kill_to_silent_s']:>12.3f}s {r['silent_to_decision_s']:>16.3f}s "
              f"{r['decision_to_stored_s']:>16.3f}s {r['decision_to_first_report_s']:>15.3f}s "
              f"{r['decision_to_last_report_s']:>14.3f}s   ({r['reported']} reported)")
    d = res["decision_to_last_report_s"]
    print(f"decision -> last of {args.vms} host_down reports: median {d['median']:.3f} s, "
          f"max {d['max']:.3f} s (target 0.3 s; OPNFV Doctor's best published: 0.58 s)")
    a = res["agent_only"]
    print(f"agent killed, host alive: {a['reported']} host_down, host {a['state']} / "
          f"{a['host_failure']} ({a['why']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
