"""`nfvha demo --qemu`: the demo on real VMs under a real libvirtd, with
recovery carried out.

A controller and a compute agent run in one process (in-process bus,
SQLite); the compute agent finds its guests through libvirt (lifecycle
events, the domains' channels) and the controller's recovery sink acts on
them through it (`[recovery] mode = libvirt`). The guests are the project's
guest image (demo/libvirt_guests.py). Faults are injected from inside the
guests (through their control port) and from outside (QEMU killed), and for
each the demo shows the fault detected, the action carried out and the time
until the guest heartbeats again.

`RecoveryRig` and `inject()` are shared with the end-to-end test and the
recovery benchmark (bench/recovery.py), so all three measure the same way.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nfvha.demo.libvirt_guests import GuestError, GuestFleet, LibvirtGuest, prepare_image

# label -> (fault kind expected, or None: no alarm and no action)
SCENARIOS: dict[str, str | None] = {
    "hang": "heartbeat_loss",            # the guest agent stops (SIGSTOP)
    "unhealthy": "unhealthy",            # the application's health check fails
    "panic": "vm_crashed",               # guest kernel panic (pvpanic)
    "qemu_killed": "vm_crashed",         # QEMU killed from outside (SIGKILL)
    "guest_shutdown": None,              # clean shutdown from inside the guest
    "guest_reboot": None,                # reboot from inside the guest
}
# what the recovery sink does per corrective action, mode libvirt
ACTIONS = {"reboot": "reset", "stop": "destroy"}
OVERRIDES = {  # group -> option -> value, for the rig's lifetime
    "compute": {"instances_source": "libvirt", "loss_wait_s": 5.0},
    "recovery": {"mode": "libvirt"},
    "heartbeat": {"spool_dir": "", "sync_interval_s": 0.0},
}


@dataclass
class Seen:
    faults: list[tuple[str, str, float]] = field(default_factory=list)  # uuid, kind, mono
    states: dict[str, tuple[str, float]] = field(default_factory=dict)  # uuid -> state, mono
    enabled: list[tuple[str, int | None, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class RecoveryRig:
    """Controller + compute agent (libvirt source, recovery mode libvirt) in
    one process, and a fleet of guests."""

    def __init__(self, conf: Any, uri: str, workdir: Path, *, reporters: list[Any],
                 host: str = "libvirt-host", min_uptime_s: float = 1.0,
                 max_actions: int = 20, window_s: float = 3600.0,
                 notice_timeout_s: float = 3.0) -> None:
        self.conf = conf
        self.uri = uri
        self.workdir = workdir
        self.reporters = reporters
        self.host = host
        self.overrides = {g: dict(o) for g, o in OVERRIDES.items()}
        self.overrides["compute"]["libvirt_uri"] = uri
        self.overrides["recovery"].update(min_uptime_s=min_uptime_s, max_actions=max_actions,
                                          window_s=window_s,
                                          notice_timeout_s=notice_timeout_s)
        self.stack: Any = None
        self.fleet: GuestFleet | None = None
        self.seen = Seen()
        self.anchor = (time.monotonic(), datetime.now(timezone.utc))

    async def start(self, image: Any) -> None:
        from nfvha.cli.services import start_stack

        for group, opts in self.overrides.items():
            for name, value in opts.items():
                self.conf.set_override(name, value, group=group)
        self.fleet = GuestFleet(self.uri, image)
        self.stack = await start_stack(
            self.conf, controller=True, compute=True, transport_url="inproc://",
            db_url=f"sqlite:///{self.workdir / 'nfvha.sqlite'}",
            instances_dir=str(self.workdir), api="127.0.0.1:0", reporters=self.reporters,
            host=self.host)
        self.stack.compute.add_observer(self._observe)

    async def stop(self) -> None:
        try:
            if self.stack is not None:
                await self.stack.stop()
        finally:
            if self.fleet is not None:
                await self.fleet.cleanup()
            for group, opts in self.overrides.items():
                for name in opts:
                    self.conf.clear_override(name, group=group)

    def _observe(self, uuid: str, out: Any, mono: float) -> None:
        name = type(out).__name__
        if name == "Fault":
            self.seen.faults.append((uuid, out.kind, mono))
        elif name == "StateChanged":
            self.seen.states[uuid] = (out.state, mono)
            if out.state == "enabled":
                self.seen.enabled.append((uuid, out.invocation_id, mono))
        else:
            return
        self.seen.changed.set()

    async def _until(self, cond: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = cond()
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.seen.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.seen.changed.wait(), min(left, 0.2))

    async def wait_enabled(self, uuid: str, after: float, timeout: float) -> float | None:
        """When the guest (re)registered after `after` (monotonic), or None."""
        return await self._until(lambda: next(
            (m for u, _, m in self.seen.enabled if u == uuid and m >= after), None), timeout)

    async def wait_fault(self, uuid: str, after: float, timeout: float,
                         kind: str | None = None) -> tuple[str, float] | None:
        return await self._until(lambda: next(
            ((k, m) for u, k, m in self.seen.faults
             if u == uuid and m >= after and (kind is None or k == kind)), None), timeout)

    def faults_since(self, uuid: str, after: float) -> list[str]:
        return [k for u, k, m in self.seen.faults if u == uuid and m >= after]

    async def event_of(self, uuid: str, kind: str, after_iso: str,
                       done: bool = True, timeout: float = 60.0) -> dict[str, Any] | None:
        """The stored fault event (with its action); with `done`, once its
        action has ended (succeeded, failed, skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in await self.stack.controller.list_events(limit=200):
                if ev["instance_uuid"] == uuid and ev["kind"] == kind \
                        and ev["detected_at"] >= after_iso:
                    act = ev.get("action")
                    if not done or (act and act["status"] in ("succeeded", "failed",
                                                               "skipped")):
                        return ev
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.2)

    def iso(self, mono: float | None) -> str | None:
        if mono is None:
            return None
        return (self.anchor[1] + timedelta(seconds=mono - self.anchor[0])).isoformat(
            timespec="microseconds")


def _ms(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    d = datetime.fromisoformat(b) - datetime.fromisoformat(a)
    return round(d.total_seconds() * 1000, 3)


async def inject(rig: RecoveryRig, g: LibvirtGuest, label: str, *, corrective_action: str,
                 boot_timeout_s: float = 120.0, quiet_s: float = 3.0) -> dict[str, Any]:
    """One fault on a running, registered guest; waits for its outcome.

    The document entry of `nfvha demo` plus the action carried out, when, and
    when the guest heartbeats again; `boot_ids` before and after (a reset
    reboots the guest: its boot id changes)."""
    expected = SCENARIOS[label]
    before = await g.boot_id()
    t0 = time.monotonic()
    if label == "hang":
        await g.control("stop")
    elif label == "unhealthy":
        await g.control("unhealthy")
    elif label == "panic":
        await g.control("panic")
    elif label == "qemu_killed":
        os.kill(g.qemu_pid(), signal.SIGKILL)
    elif label == "guest_shutdown":
        await g.control("poweroff")
    elif label == "guest_reboot":
        await g.control("reboot")
    res: dict[str, Any] = {
        "instance": g.uuid, "kind": label, "expect_alarm": expected is not None,
        "fault": expected, "injected_at": rig.iso(t0), "detected_at": None,
        "reported_at": None, "detect_ms": None, "report_ms": None, "action": None,
        "action_at": None, "action_status": None, "recovered_at": None,
        "recovery_ms": None, "boot_ids": [before], "domain": "running", "verdict": "ok"}
    if expected is None:
        if label == "guest_reboot":
            back = await rig.wait_enabled(g.uuid, t0, boot_timeout_s)
            if back is None:
                res["verdict"] = "NOT BACK"
            else:
                res["recovered_at"] = rig.iso(back)
                res["recovery_ms"] = round((back - t0) * 1000, 3)
                res["boot_ids"].append(await g.boot_id())
        else:  # shut down: the domain ends
            deadline = time.monotonic() + 60
            while await asyncio.to_thread(g.running) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        await asyncio.sleep(quiet_s)  # room for a false alarm to show
        res["domain"] = "running" if await asyncio.to_thread(g.running) else "shut off"
        unexpected = rig.faults_since(g.uuid, t0)
        if unexpected:
            res["verdict"] = f"FALSE ALARM {unexpected}"
        return res
    got = await rig.wait_fault(g.uuid, t0, 30)
    if got is None:
        res["verdict"] = "MISSED"
        return res
    kind, detected = got
    res["_detected"] = detected
    res["detected_at"] = rig.iso(detected)
    res["detect_ms"] = round((detected - t0) * 1000, 3)
    if kind != expected:
        res["verdict"] = f"WRONG KIND {kind}"
    ev = await rig.event_of(g.uuid, kind, res["injected_at"], timeout=boot_timeout_s)
    if ev is None or not ev.get("action"):
        res["verdict"] = "NO ACTION"
        return res
    act = ev["action"]
    res.update(action=act["action"], action_at=act["issued_at"], action_status=act["status"],
               recovered_at=act["recovered_at"], recovery_ms=act["recovery_ms"],
               detect_to_action_ms=_ms(ev["detected_at"], act["issued_at"]))
    want = ACTIONS.get(corrective_action)
    if act["action"] != want:
        res["verdict"] = f"ACTION {act['action']} (expected {want})"
    if corrective_action == "stop":
        res["domain"] = "running" if await asyncio.to_thread(g.running) else "shut off"
        if res["domain"] != "shut off":
            res["verdict"] = "NOT STOPPED"
    elif act["status"] != "succeeded":
        res["verdict"] = f"ACTION {act['status']}: {act['reason']}"
    else:
        res["boot_ids"].append(await g.boot_id())
        if res["boot_ids"][-1] == before:
            res["verdict"] = "NOT RESET (same boot id)"
    return res


async def repair(rig: RecoveryRig, g: LibvirtGuest, label: str, timeout: float = 120.0) -> bool:
    """Back to a running, registered guest for the next fault."""
    if not await asyncio.to_thread(g.running):
        t0 = time.monotonic()
        await g.start()
        return await rig.wait_enabled(g.uuid, t0, timeout) is not None
    state = rig.seen.states.get(g.uuid, ("", 0.0))[0]
    if state != "enabled":
        return await rig.wait_enabled(g.uuid, 0.0, timeout) is not None
    return True


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q * (len(ordered) - 1)))))]


async def run_qemu_demo(conf: Any, *, interval_ms: int = 250, as_json: bool = False,
                        rounds: int = 1) -> int:
    from nfvha.compute.libvirt_daemon import LibvirtDaemon, LibvirtdError
    from nfvha.demo.webhook_sink import WebhookSink

    say = (lambda *a: None) if as_json else print  # noqa: E731
    try:
        image = await asyncio.to_thread(prepare_image)
    except SystemExit as exc:
        print(f"nfvha demo --qemu: cannot build the guest image: {exc}")
        return 2
    daemon = LibvirtDaemon()
    try:
        await asyncio.to_thread(daemon.start)
    except LibvirtdError as exc:
        print(f"nfvha demo --qemu: libvirtd is not available: {exc}")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="nfvha-qdemo-"))
    sink = WebhookSink()
    sink_url = await sink.start()
    from nfvha.cli.services import build_reporters

    rig = RecoveryRig(conf, daemon.uri, tmp, reporters=build_reporters(conf, sink_url))
    results: list[dict[str, Any]] = []
    try:
        await rig.start(image)
        assert rig.fleet is not None
        say(f"nfvha demo --qemu: libvirtd at {daemon.uri} "
            f"({'reused' if daemon.reused else 'started here'}), guest image "
            f"{image.kernel.name} + {image.initrd.name}, recovery mode libvirt")
        a = await rig.fleet.add("reboot", interval_ms=interval_ms, corrective_action="reboot")
        b = await rig.fleet.add("stop", interval_ms=interval_ms, corrective_action="stop")
        for g in (a, b):
            if await rig.wait_enabled(g.uuid, 0.0, 180) is None:
                print(f"guest {g.name} did not register:\n{g.console()}")
                return 1
        say(f"2 guests booted and heartbeating at {interval_ms} ms: {a.name} "
            "(corrective action reboot), "
            f"{b.name} (stop)\n")
        plan = [(a, "reboot", lbl) for lbl in SCENARIOS] * rounds + [(b, "stop", "hang")]
        say(f"{'fault':15} {'expected':15} {'detect_ms':>9} {'action':8} "
            f"{'recovery_ms':>11}  result")
        for g, action, label in plan:
            res = await inject(rig, g, label, corrective_action=action)
            if res["fault"] and res["detected_at"]:
                rec = await sink.wait_for(g.uuid, res["fault"], after=res["_detected"],
                                          timeout=10)
                if rec is not None:
                    res["reported_at"] = rig.iso(rec.mono)
                    res["report_ms"] = _ms(res["detected_at"], res["reported_at"])
            results.append(res)
            d = "-" if res["detect_ms"] is None else f"{res['detect_ms']:.0f}"
            r = "-" if res["recovery_ms"] is None else f"{res['recovery_ms']:.0f}"
            say(f"{label:15} {res['fault'] or 'no alarm':15} {d:>9} {res['action'] or '-':8} "
                f"{r:>11}  {res['verdict']}"
                + (f" (domain {res['domain']})" if res["domain"] != "running" else ""))
            if g is a and not await repair(rig, g, label):
                say(f"guest {g.name} did not come back:\n{g.console()}")
                break
        ok = len(results) == len(plan) and all(r["verdict"] == "ok" for r in results)
        detects = [r["detect_ms"] for r in results if r["detect_ms"] is not None]
        recoveries = [r["recovery_ms"] for r in results
                      if r["recovery_ms"] is not None and r["expect_alarm"]]
        own = [r["recovery_ms"] for r in results
               if r["kind"] == "guest_reboot" and r["recovery_ms"] is not None]
        doc = {"interval_ms": interval_ms, "libvirt_uri": daemon.uri,
               "faults": [{k: v for k, v in r.items() if not k.startswith("_")}
                          for r in results], "false_alarms": sum(
                   1 for r in results if r["verdict"].startswith("FALSE ALARM"))}
        if as_json:
            print(json.dumps(doc, indent=2))
        else:
            say("")
            if detects:
                say(f"detection: median {statistics.median(detects):.0f} ms, "
                    f"p99 {_pct(detects, 0.99):.0f} ms")
            if recoveries:
                say(f"fault -> guest heartbeats again: median "
                    f"{statistics.median(recoveries):.0f} ms, max {max(recoveries):.0f} ms "
                    f"(the guest's own reboot, from inside: "
                    f"{', '.join(f'{x:.0f}' for x in own) or '-'} ms)")
            say("result: " + ("every fault detected and recovered as the guest asked; "
                              "no alarm and no action for the shutdown and the reboot "
                              "from inside" if ok else "FAILED (see above)"))
        return 0 if ok else 1
    except GuestError as exc:
        print(f"nfvha demo --qemu: {exc}")
        return 1
    finally:
        await rig.stop()
        await sink.stop()
        await asyncio.to_thread(daemon.stop)
        shutil.rmtree(tmp, ignore_errors=True)
