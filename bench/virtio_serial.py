"""Heartbeat over real virtio-serial: one tiny VM under QEMU (TCG: there is no
KVM on these machines, so the guest runs emulated and slower than on a real
compute host), our guest agent inside on /dev/virtio-ports/cgcs.heartbeat,
the real ComputeAgent on QEMU's chardev socket (tests/qemu_vm.py,
docs/qemu-test-vm.md).

Measures, all on this run:
- challenge -> response round trip at a 100 ms interval;
- hang -> heartbeat_loss: the agent in the VM SIGSTOPped, at the default
  250 ms interval (fault's detection time on the host's monotonic clock
  minus the moment the stop command returned);
- health probe fails -> unhealthy fault: the probe's file removed.

    python bench/virtio_serial.py [--quick] [--json]

Needs qemu-system-x86_64, busybox and a kernel under /boot (make setup
installs them); without them it says so and exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from _common import StubController, pct  # noqa: E402

INTERVAL_MS = 250  # nfvha-guest's default
FAST_INTERVAL_MS = 100


async def wait_for(cond: Any, timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not met in time")


async def measure(vm: Any, rounds: int, rtts: int) -> dict[str, Any]:
    from nfvha.bus import make_bus
    from nfvha.compute.agent import ComputeAgent
    from nfvha.protocol import host as hostsm

    bus = make_bus("inproc://")
    await bus.start()
    rec = StubController()
    await bus.serve_controller(rec)
    agent = ComputeAgent("bench-host", vm.workdir, bus)
    rtt: list[float] = []
    agent.add_observer(lambda u, out, mono: rtt.append(out.ms)
                       if isinstance(out, hostsm.RoundTrip) else None)

    async def control(cmd: str) -> str:
        return await asyncio.to_thread(vm.control, cmd)

    def enabled_at(interval: int) -> bool:
        s = rec.states[-1] if rec.states else None
        return bool(s and s["state"] == "enabled" and s["interval_ms"] == interval)

    async def restart_agent(interval: int) -> None:
        await control("term")
        await control("wait")
        args = vm.agent_args.copy()
        args[args.index("--interval-ms") + 1] = str(interval)
        await control("start " + " ".join(args))
        await wait_for(lambda: enabled_at(interval))

    await agent.start()
    out: dict[str, Any] = {"boot_s": vm.boot_s}
    try:
        await restart_agent(FAST_INTERVAL_MS)
        await asyncio.sleep(0.5)  # past the first, spread-out challenge
        rtt.clear()
        await wait_for(lambda: len(rtt) >= rtts, timeout=rtts * 0.5)
        out["rtt_ms"] = list(rtt[:rtts])

        await restart_agent(INTERVAL_MS)
        hang: list[float] = []
        for _ in range(rounds):
            # a random phase against the challenge rhythm: faults do not wait for it
            await asyncio.sleep(0.5 + random.uniform(0, INTERVAL_MS / 1000))
            n = len(rec.faults)
            await control("stop")
            t0 = time.monotonic()
            try:
                fault = (await wait_for(lambda n=n: rec.faults[n:]))[0]
            finally:
                await control("cont")
            assert fault["kind"] == "heartbeat_loss", fault
            hang.append((fault["detected_mono"] - t0) * 1000)
            await wait_for(lambda: enabled_at(INTERVAL_MS))
        out["hang_ms"] = hang

        unhealthy: list[float] = []
        for _ in range(max(3, rounds // 2)):
            await asyncio.sleep(0.5 + random.uniform(0, INTERVAL_MS / 1000))
            n = len(rec.faults)
            await control("unhealthy")
            t0 = time.monotonic()
            fault = (await wait_for(lambda n=n: rec.faults[n:]))[0]
            await control("healthy")
            assert fault["kind"] == "unhealthy", fault
            unhealthy.append((fault["detected_mono"] - t0) * 1000)
            await wait_for(lambda: enabled_at(INTERVAL_MS) and rec.states[-1]["health"]
                           == "healthy")
        out["unhealthy_ms"] = unhealthy
        out["unexpected_faults"] = len(rec.faults) - len(hang) - len(unhealthy)
    finally:
        await agent.stop()
        await bus.stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the injected faults' warnings are expected
    from qemu_vm import QemuVM, kernel_missing

    missing = [c for c in ("qemu-system-x86_64", "busybox") if shutil.which(c) is None]
    reason = ", ".join(f"{c} not installed" for c in missing) or kernel_missing()
    if reason:
        print(f"virtio-serial bench skipped: {reason} (make setup installs them)")
        return 0
    rounds, rtts = (5, 100) if args.quick else (20, 300)
    with QemuVM(interval_ms=INTERVAL_MS) as vm:
        result = asyncio.run(measure(vm, rounds, rtts))
    image: Any = vm.image
    print(f"heartbeat over real virtio-serial: QEMU TCG VM (kernel {image.kernel_release}, "
          f"guest Python {image.python_version}), booted to its control port in "
          f"{result['boot_s']:.1f} s")
    print(f"{'measure':<44} {'n':>4} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for label, key in ((f"challenge -> response round trip, {FAST_INTERVAL_MS} ms", "rtt_ms"),
                       (f"agent hung -> heartbeat_loss, {INTERVAL_MS} ms", "hang_ms"),
                       (f"probe fails -> unhealthy, {INTERVAL_MS} ms", "unhealthy_ms")):
        xs = result[key]
        print(f"{label:<44} {len(xs):>4} {statistics.median(xs):>10.2f} {pct(xs, 0.99):>8.2f} "
              f"{max(xs):>8.2f}")
    print(f"faults other than the injected ones: {result['unexpected_faults']}")
    if args.json:
        print(json.dumps(result))
    return 0 if result["unexpected_faults"] == 0 else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
