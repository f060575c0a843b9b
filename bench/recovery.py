"""Recovery on real guests under a real libvirtd: fault -> detection ->
action issued -> the guest heartbeats again, beside the guest's own reboot.

The same rig as `nfvha demo --qemu` (nfvha/demo/qemu_libvirt.py): the
controller with the recovery sink in mode libvirt and the compute agent with
the libvirt source in one process, guests of the project's image as TCG
domains (software emulation: there is no KVM here, so a guest boots slower
than on a real compute host). Each round injects, on one guest whose
corrective action is reboot: the agent hung (SIGSTOP), the application
unhealthy, a kernel panic, QEMU killed from outside; and, as the baseline,
a reboot from inside the guest (the guest's own boot time, no nfvha action).

    python bench/recovery.py [--quick] [--rounds N] [--interval-ms N] [--json]

Columns (ms, median / p99 over the rounds):
- detect: injection -> the compute agent's fault;
- detect->action: the fault's detection -> the action issued (controller's
  record: decided, notice for an unhealthy guest, compute asked; the reset
  itself returns in a few ms);
- fault->back: the fault's detection -> the guest heartbeats again
  (recovery_ms of the action record, the compute's clock);
- own reboot: `reboot` inside the guest -> it heartbeats again.

Needs root, QEMU and libvirt (make setup installs them); without them it
says so and exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _common import pct  # noqa: E402

FAULTS = ("hang", "unhealthy", "panic", "qemu_killed")


class Ack:
    name = "ack"

    async def deliver(self, event: dict[str, Any]) -> None:
        return None


async def run(rounds: int, interval_ms: int) -> dict[str, Any]:
    from nfvha.cli.services import load_conf
    from nfvha.compute.libvirt_daemon import LibvirtDaemon, unavailable_reason
    from nfvha.demo.libvirt_guests import prepare_image
    from nfvha.demo.qemu_libvirt import RecoveryRig, inject, repair

    why = unavailable_reason()
    if why:
        return {"skipped": why}
    try:
        image = await asyncio.to_thread(prepare_image)
    except SystemExit as exc:
        return {"skipped": f"guest image: {exc}"}
    daemon = LibvirtDaemon()
    await asyncio.to_thread(daemon.start)
    tmp = Path(tempfile.mkdtemp(prefix="nfvha-bench-rec-"))
    rig = RecoveryRig(load_conf([]), daemon.uri, tmp, reporters=[Ack()], min_uptime_s=0.5)
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in (*FAULTS, "guest_reboot")}
    try:
        await rig.start(image)
        assert rig.fleet is not None
        g = await rig.fleet.add("bench", interval_ms=interval_ms, corrective_action="reboot")
        if await rig.wait_enabled(g.uuid, 0.0, 180) is None:
            raise RuntimeError(f"guest did not register:\n{g.console()}")
        for _ in range(rounds):
            for label in (*FAULTS, "guest_reboot"):
                res = await inject(rig, g, label, corrective_action="reboot")
                samples[label].append(res)
                print(f"  {label:12} {res['verdict']:3} detect {res['detect_ms']} ms, "
                      f"back {res['recovery_ms']} ms", file=sys.stderr, flush=True)
                if not await repair(rig, g, label):
                    raise RuntimeError(f"guest did not come back after {label}")
    finally:
        await rig.stop()
        await asyncio.to_thread(daemon.stop)
        shutil.rmtree(tmp, ignore_errors=True)

    def stat(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
        xs = [r[key] for r in rows if r.get(key) is not None]
        return {"median": pct(xs, 0.5), "p99": pct(xs, 0.99)}

    table = []
    for label in FAULTS:
        rows = samples[label]
        table.append({"fault": label, "n": len(rows),
                      "ok": sum(r["verdict"] == "ok" for r in rows),
                      "detect_ms": stat(rows, "detect_ms"),
                      "detect_to_action_ms": stat(rows, "detect_to_action_ms"),
                      "fault_to_back_ms": stat(rows, "recovery_ms")})
    own = samples["guest_reboot"]
    return {"interval_ms": interval_ms, "rounds": rounds, "faults": table,
            "own_reboot_ms": stat(own, "recovery_ms"),
            "false_alarms": sum(r["verdict"].startswith("FALSE") for r in own)}


def _fmt(d: dict[str, float | None]) -> str:
    if d["median"] is None:
        return "-"
    return f"{d['median']:.0f} / {d['p99']:.0f}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval-ms", type=int, default=250)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    doc = asyncio.run(run(1 if args.quick else args.rounds, args.interval_ms))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if "skipped" in doc:
        print(f"recovery on real guests: skipped ({doc['skipped']})")
        return 0
    print(f"recovery on real guests under libvirt (TCG), guest interval {doc['interval_ms']} "
          f"ms, {doc['rounds']} round(s); median / p99 in ms")
    print(f"{'fault':12} {'n':>3} {'ok':>3} {'detect':>13} {'detect->action':>15} "
          f"{'fault->back':>13}")
    for row in doc["faults"]:
        print(f"{row['fault']:12} {row['n']:>3} {row['ok']:>3} {_fmt(row['detect_ms']):>13} "
              f"{_fmt(row['detect_to_action_ms']):>15} {_fmt(row['fault_to_back_ms']):>13}")
    print(f"the guest's own reboot (from inside, no action): {_fmt(doc['own_reboot_ms'])} "
          f"ms; false alarms {doc['false_alarms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
