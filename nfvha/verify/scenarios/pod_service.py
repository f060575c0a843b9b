"""One service on a node of a pod file: inject a fault there, watch from the client.

The remote-deployment shape of Yardstick's ServiceHA case, on nfvha's engine:
the attacker and a process monitor are *placed on the victim node* (any
`nodes.Node`: ssh, namespace, local), the HTTP probe runs where a client
would (here: a client network namespace, open loop every 10 ms).

Faults: `kill-process` (kill -9 of the process matching `pattern`, sent
with `kill` on the node) or `drop-port` (nftables drops the service's TCP
port on the node for `drop_s`, then heals). Detection here is the node-side
monitor seeing the process gone (kill) — a dropped port leaves the process
alive, so there is none: that difference is what the scenario shows.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Optional

from ..attackers import Attacker, DropPort, KillProcess
from ..engine import Phases, Plan, execute
from ..metrics import Measurement
from ..node_probes import NodeProcessProbe
from ..nodes import Node
from ..probes import HttpProbe, NamespaceSockets
from ..timeline import Record


@dataclass
class PodService:
    node: Node                 # where the service runs (the victim)
    pattern: str               # pgrep -f pattern of its process on that node
    host: str                  # where clients reach it
    port: int
    client_netns: Optional[str] = None   # the clients' namespace (None: this one)


async def run(svc: PodService, fault: str = "kill-process", *, drop_s: float = 0.5,
              phases: Optional[Phases] = None) -> tuple[Record, Measurement]:
    # observe up to 10 s (SAL3's detection bound): done() ends it as soon as
    # the fault is seen, and a slow detection is then measured, not missed
    phases = phases or Phases(baseline_s=0.5, observe_s=10.0, settle_s=0.5)
    record = Record(f"pod-{fault}", time.monotonic())
    attacker: Attacker
    if fault == "kill-process":
        attacker = KillProcess(svc.pattern, node=svc.node)
    elif fault == "drop-port":
        attacker = DropPort(svc.port, node=svc.node, seconds=drop_s)
    else:
        raise ValueError(f"unknown fault {fault!r}: kill-process or drop-port")
    sockets = NamespaceSockets(svc.client_netns) if svc.client_netns else None
    http = HttpProbe(svc.host, svc.port, interval=0.01, timeout=0.2, name="http",
                     sock_factory=sockets, open_loop=True)
    proc = NodeProcessProbe(svc.node, svc.pattern, interval=0.01, name="process")
    record.facts.update({"victim": f"{svc.pattern} on {svc.node.name}", "fault": fault,
                         "main_probe": "http"})

    def on_process(ok: bool, t: float, detail: str) -> None:
        if not ok and record.fault_at is not None and record.first("detected") is None:
            record.mark("detected", t, f"process gone ({detail})")

    def done(r: Record) -> bool:
        f = r.fault_at
        if f is None:
            return False
        if fault == "kill-process":
            return r.first("detected") is not None and any(
                not s.ok for s in r.samples if s.probe == "http" and s.t > f)
        healed = getattr(attacker, "healed_at", None)
        return healed is not None and any(s.ok for s in r.samples
                                          if s.probe == "http" and s.t > healed + 0.05)

    plan = Plan(record.scenario, [(http, None), (proc, on_process)], attacker, done=done,
                need_instance_back=False)
    try:
        await svc.node.connect()
        m = await execute(plan, record, phases)
    except LookupError as exc:      # no such process on the node: bad input, not a crash
        raise RuntimeError(str(exc)) from exc
    finally:
        if sockets is not None:
            sockets.close()
    record.facts["attacker"] = attacker.describe()
    if isinstance(attacker, DropPort):
        record.facts["drop_applied_ms"] = _ms(attacker.applied_at, record.fault_at)
        record.facts["drop_healed_ms"] = _ms(attacker.healed_at, record.fault_at)
    return record, m


def _ms(t: Optional[float], ref: Optional[float]) -> Optional[float]:
    return None if t is None or ref is None else round(1000.0 * (t - ref), 1)


async def _figures(runs: int, port: int = 18080) -> None:
    """Namespaces as SSH hosts (deploy.sshd), the backend on node a: kill -9 and
    drop-port over ssh, `runs` times each; prints one line per run."""
    import statistics
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from ..deploy.sshd import SshHosts
    from ..nodes import from_pod

    with tempfile.TemporaryDirectory(prefix="nfvha-ssh-") as tmp, \
            SshHosts(Path(tmp) / "hosts", net=63) as hosts:
        node = from_pod(hosts.pod())["node-a"]
        await node.connect()
        rtt = []
        for _ in range(20):
            t = time.monotonic()
            await node.run(["true"])
            rtt.append(1000 * (time.monotonic() - t))
        print(f"ssh command round trip (multiplexed): median {statistics.median(rtt):.1f} ms, "
              f"max {max(rtt):.1f} ms")
        svc = PodService(node, f"[n]fvha.verify.backend --host 0.0.0.0 --port {port}",
                         hosts.addr["a"], port, client_netns=hosts.lan.client.name)
        for fault in ("kill-process", "drop-port"):
            for i in range(runs):
                p = hosts.lan.nodes["a"].popen(
                    [sys.executable, "-m", "nfvha.verify.backend", "--host", "0.0.0.0",
                     "--port", str(port), "--name", "a"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    await _serving(hosts, port)
                    record, m = await run(svc, fault)
                finally:
                    if p.poll() is None:
                        p.kill()
                    p.wait(5)
                extra = ""
                if fault == "drop-port":
                    extra = (f", rule in place at {record.facts['drop_applied_ms']} ms, "
                             f"heal sent at {record.facts['drop_healed_ms']} ms")
                det = "none" if m.detection_ms is None else f"{m.detection_ms:.1f} ms"
                print(f"{fault} #{i + 1}: detection (process gone, seen over ssh) {det}, "
                      f"client outage {m.outage_ms:.1f} ms (+{m.outage_precision_ms:.1f}), "
                      f"failed requests {m.lost}{extra}")
        await node.close()


async def _serving(hosts, port: int, timeout: float = 10.0) -> None:
    sockets = NamespaceSockets(hosts.lan.client.name)
    probe = HttpProbe(hosts.addr["a"], port, timeout=0.5, sock_factory=sockets)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (await probe.once()).ok:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("service never answered")
    finally:
        await probe.close()
        sockets.close()


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description="pod-file scenario over real ssh to namespaces "
                                "(needs root, sshd, socat, nft): prints figures")
    p.add_argument("--runs", type=int, default=3)
    asyncio.run(_figures(p.parse_args().runs))


if __name__ == "__main__":
    main()
