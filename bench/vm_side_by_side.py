"""Hang detection side by side, in one run on the same real QEMU guests:
nfvha against what an operator can set up without it.

Three TCG guests of the project's image under a real libvirtd, booted from
Debian's generic kernel (it has the i6300esb driver the cloud kernel lacks;
guest_image.watchdog_kernel()). Each runs the nfvha guest agent, qemu-ga and
a watchdog feeder (busybox watchdog on /dev/watchdog). A hang is all three
frozen at the same instant (the guest's control command ``freeze``: one
SIGSTOP for the three pids), timestamped on the host just before the
command is sent; every method watching that guest measures the same hang (the operator's monitors
run in a process of their own, as Masakari's does, not in the compute
agent's event loop; times are CLOCK_MONOTONIC, system-wide):

- nfvha: the compute agent's ``heartbeat_loss`` fault (libvirt source, as
  nfvha demo --qemu wires it: nfvha/demo/qemu_libvirt.py RecoveryRig;
  corrective action ``log``, so nothing is reset), at 100 ms and at the
  guest agent's default interval (read from nfvha.guest.cli at run time);
- qemu-ga ``guest-ping`` from the host every 100 ms, 100 ms timeout, hang
  after 3 misses in a row (qemu-ga's own socket: libvirt's agent API takes
  whole seconds as timeout);
- Masakari's introspective instance monitor at its defaults (guest-ping
  through libvirt's qemuAgentCommand every 10 s, 2 s timeout, threshold 3;
  its rule from masakarimonitors/introspectiveinstancemonitor/qemu_utils.py:
  a notification once the failure count exceeds the threshold in state
  error, i.e. at the 5th failed ping in a row). Its journal is reset after
  each hang, as the recovery's reboot would (a lifecycle event). Each of its
  samples takes about a minute: fewer of them (--masakari-hangs);
- the i6300esb watchdog at the Linux driver's 1 s floor (timeout 1 s,
  keepalive every 500 ms), action none; the fault is libvirt's WATCHDOG
  event (QEMU's, relayed). QEMU disarms the device when it fires: the
  feeder is restarted after each hang.

Guests: A = nfvha 100 ms + qemu-ga 100 ms + watchdog; B = nfvha default +
qemu-ga 100 ms + watchdog; C = nfvha default + Masakari + watchdog. A and B
hang --hangs times each, C --masakari-hangs times, concurrently; before
each hang the guest waits until every method sees it healthy again, then a
quiet stretch of random length (so hangs fall at random phases of every
method's period). A false alarm is a method declaring a hang of a guest
during its quiet stretches, or declaring one on evidence (a first missed
answer) from before the freeze. Last, on A, the application turns unhealthy
(its health check file removed) while kernel and agents run: which method
sees that.

    python bench/vm_side_by_side.py [--short] [--hangs N] [--masakari-hangs N] [--json]

With --json, stdout is {"methods": [{"name", "setting", "n", "median_ms",
"p99_ms", "false_alarms"}]} and the table goes to stderr. Needs root, QEMU
and libvirt (make setup) and apt-get (the generic kernel package is fetched
once into the image cache); without them it says so and exits 0.
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
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _common import pct  # noqa: E402

WATCHDOG_TIMEOUT_S = 1          # the i6300esb driver's floor (heartbeat 1..2046 s)
WATCHDOG_FEED_MS = 500          # keepalive at half the timeout (busybox, systemd)
# A freeze acknowledged later than this: the guest (its vCPU) stalled as the
# command was sent, the freeze itself came up to that much after its timestamp
STALLED_ACK_MS = 100.0
QGA_FAST = (0.1, 0.1, 3)        # period s, timeout s, misses
MASAKARI = (10.0, 2, 3)         # guest_monitoring_interval, _timeout, _failure_threshold
DETECTOR_FILES = ("nfvha/protocol/host.py", "nfvha/compute/session.py",
                  "nfvha/compute/agent.py")


class Ack:
    name = "ack"

    async def deliver(self, event: dict[str, Any]) -> None:
        return None


def default_interval_ms() -> int:
    from nfvha.guest.cli import DEFAULTS

    return int(DEFAULTS["interval_ms"])


# ------------------------------------------------------------------ methods
class Probe:
    """One method watching one guest: when it declared a fault (monotonic s)."""

    def __init__(self, name: str, setting: str) -> None:
        self.name, self.setting = name, setting
        self.declared: list[float] = []
        # declaration -> when its evidence began (its first missed deadline):
        # one that began before a hang is no detection of it
        self.evidence: dict[float, float] = {}

    def decls(self) -> list[float]:
        return self.declared

    def first_after(self, t: float) -> float | None:
        return next((d for d in self.decls() if d >= t and self.evidence.get(d, t) >= t), None)

    def healthy(self) -> bool:
        return True


class NfvhaProbe(Probe):
    def __init__(self, setting: str, rig: Any, uuid: str, interval_ms: int) -> None:
        super().__init__("nfvha", setting)
        self.rig, self.uuid, self.interval_ms = rig, uuid, interval_ms
        # the machine's outputs for this guest: challenge sent, round trip,
        # state, fault, starved (to show what led to a false alarm or a miss)
        self.trace: list[tuple[float, str]] = []
        rig.stack.compute.add_observer(self._observe)

    def _observe(self, uuid: str, out: Any, mono: float) -> None:
        if uuid != self.uuid:
            return
        name = type(out).__name__
        if name == "Send" and out.msg.get("msg_type") == "challenge":
            self.trace.append((mono, "challenge"))
        elif name == "RoundTrip":
            self.trace.append((mono, f"rtt {out.ms:.0f}"))
        elif name == "StateChanged":
            self.trace.append((mono, out.state))
        elif name == "Fault":
            self.trace.append((mono, f"FAULT {out.kind} ({out.detail})"))
        elif name == "Starved":
            self.trace.append((mono, f"starved={out.active} ({out.detail})"))

    def around(self, t0: float, before: float, after: float) -> str:
        """The trace from t0 - before to t0 + after, times in ms from t0."""
        return "; ".join(f"{(m - t0) * 1000:+.0f} {what}" for m, what in self.trace
                         if t0 - before <= m <= t0 + after)

    def decls(self) -> list[float]:  # every fault of the guest, whatever its kind
        return [m for u, _k, m in self.rig.seen.faults if u == self.uuid]

    def kind_at(self, t: float) -> str:
        return next((k for u, k, m in self.rig.seen.faults if u == self.uuid and m == t), "")

    def healthy(self) -> bool:
        return self.rig.seen.states.get(self.uuid, ("", 0.0))[0] == "enabled"


# The operator's monitors run in a process of their own (as Masakari's does),
# not in the compute agent's event loop: neither slows the other. They report
# on stdout, one JSON line per event, with CLOCK_MONOTONIC times (system-wide,
# so comparable with ours); "reset LABEL" on stdin resets a Masakari journal.
def _setting_qga(period: float, timeout: float, misses: int) -> str:
    return f"guest-ping {period * 1000:.0f} ms / {timeout * 1000:.0f} ms / {misses} misses"


def _setting_masakari(interval: float, timeout: int, threshold: int) -> str:
    return (f"Masakari introspective monitor: guest-ping {interval:.0f} s / {timeout} s / "
            f"threshold {threshold}")


class QgaPing:
    """guest-ping on qemu-ga's socket: every `period`, `timeout` for the
    answer (matched by id: a frozen agent's late answers are stale), a hang
    at `misses` misses in a row. The evidence of a hang starts at the first
    missed answer's deadline."""

    def __init__(self, label: str, path: str, emit: Any) -> None:
        self.label, self.path, self.emit = label, path, emit
        self.period, self.timeout, self.misses = QGA_FAST
        self.waiting: dict[int, asyncio.Future[float]] = {}

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
                fut = self.waiting.pop(int(json.loads(line)["id"]), None)
                if fut is not None and not fut.done():
                    fut.set_result(time.monotonic())

    async def run(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self.path)
        rd = asyncio.create_task(self._read(reader))
        loop = asyncio.get_running_loop()
        streak, first_miss, healthy = 0, 0.0, None
        try:
            n = 0
            while True:
                start = time.monotonic()
                n += 1
                fut: asyncio.Future[float] = loop.create_future()
                self.waiting[n] = fut
                writer.write(json.dumps({"execute": "guest-ping", "id": n}).encode() + b"\n")
                await writer.drain()
                try:
                    await asyncio.wait_for(asyncio.shield(fut), self.timeout)
                    streak = 0
                except asyncio.TimeoutError:
                    self.waiting.pop(n, None)
                    streak += 1
                    if streak == 1:
                        first_miss = start + self.timeout
                    if streak == self.misses:
                        self.emit(self.label, "declared", t=time.monotonic(), evidence=first_miss)
                if (streak == 0) != healthy:
                    healthy = streak == 0
                    self.emit(self.label, "healthy", v=healthy)
                await asyncio.sleep(max(0.0, start + self.period - time.monotonic()))
        finally:
            rd.cancel()
            writer.close()


class Masakari:
    """Masakari's introspective instance monitor, its loop and state machine
    (qemu_utils.QemuGuestAgent) for one domain, in a thread: libvirt's
    qemuAgentCommand guest-ping every `interval` s (a fixed-interval loop),
    `timeout` s each; the notification once the failure count exceeds the
    threshold in state error."""

    _NEXT = {("discovery", True): "healthy", ("discovery", False): "discovery",
             ("healthy", True): "healthy", ("healthy", False): "error",
             ("error", True): "healthy", ("error", False): "error",
             ("reported", True): "discovery", ("reported", False): "reported"}

    def __init__(self, label: str, dom: Any, emit: Any) -> None:
        self.label, self.dom, self.emit = label, dom, emit
        self.interval, self.timeout, self.threshold = MASAKARI
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.first_fail = 0.0
        self.state, self.failed, self.sent = "discovery", 0, False

    def reset(self) -> None:
        """resetJournal: what a lifecycle event (the recovery's reboot) does."""
        with self.lock:
            self.state, self.failed, self.sent = "discovery", 0, False
        self.emit(self.label, "healthy", v=False)

    def _record(self, pingable: bool, deadline: float) -> None:
        with self.lock:
            if not pingable:
                if self.state != "error" and self.state != "reported":
                    self.first_fail = deadline
                if self.state == "error" and self.failed > self.threshold and not self.sent:
                    self.emit(self.label, "declared", t=time.monotonic(),
                              evidence=self.first_fail)  # _masakari_notifier
                    self.state, self.sent = "reported", True
                self.state = self._NEXT[(self.state, False)]
                if self.state == "error":
                    self.failed += 1
            else:
                self.failed = 0
                self.state = self._NEXT[(self.state, True)]
            self.emit(self.label, "healthy", v=self.state == "healthy")

    def run(self) -> None:
        import libvirt
        import libvirt_qemu

        while not self.stop.is_set():
            start = time.monotonic()
            try:
                ok = libvirt_qemu.qemuAgentCommand(self.dom, '{"execute": "guest-ping"}',
                                                   self.timeout, 0) is not None
            except libvirt.libvirtError:
                ok = False
            self._record(ok, start + self.timeout)
            self.stop.wait(max(0.0, start + self.interval - time.monotonic()))


async def monitor_worker(specs: list[dict[str, str]]) -> None:
    """The operator's monitors (--monitor-worker): until stdin closes."""
    lock = threading.Lock()

    def emit(label: str, ev: str, **kw: Any) -> None:
        with lock:
            sys.stdout.write(json.dumps({"label": label, "ev": ev, **kw}) + "\n")
            sys.stdout.flush()

    tasks: list[asyncio.Future[Any]] = []
    masakaris: dict[str, Masakari] = {}
    conn = None
    for spec in specs:
        if spec["kind"] == "qga":
            tasks.append(asyncio.ensure_future(QgaPing(spec["label"], spec["path"], emit).run()))
        else:
            import libvirt

            # libvirt prints each error besides raising it: a failed ping is expected
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            conn = conn or libvirt.open(spec["uri"])
            m = Masakari(spec["label"], conn.lookupByUUIDString(spec["uuid"]), emit)
            masakaris[spec["label"]] = m
            tasks.append(asyncio.ensure_future(asyncio.to_thread(m.run)))
    emit("", "started")
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        cmd, _, label = line.strip().partition(" ")
        if cmd == "reset" and label in masakaris:
            masakaris[label].reset()
    for m in masakaris.values():
        m.stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Remote(Probe):
    """A monitor of the worker process, as its events tell it."""

    def __init__(self, name: str, setting: str, worker: Worker, label: str) -> None:
        super().__init__(name, setting)
        self.worker, self.label = worker, label
        self.is_healthy = False
        worker.probes[label] = self

    def healthy(self) -> bool:
        return self.is_healthy

    def reset(self) -> None:
        self.is_healthy = False  # until the worker says so again
        self.worker.send(f"reset {self.label}")


class Worker:
    def __init__(self) -> None:
        self.probes: dict[str, Remote] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self, specs: list[dict[str, str]]) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--monitor-worker", json.dumps(specs),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        started = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read(started))
        await asyncio.wait_for(started, 60)

    async def _read(self, started: asyncio.Future[None]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            ev = json.loads(line)
            if ev["ev"] == "started" and not started.done():
                started.set_result(None)
            p = self.probes.get(ev["label"])
            if p is None:
                continue
            if ev["ev"] == "declared":
                p.declared.append(ev["t"])
                p.evidence[ev["t"]] = ev["evidence"]
            elif ev["ev"] == "healthy":
                p.is_healthy = ev["v"]

    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self.reader is not None:
            self.reader.cancel()


class Watchdog(Probe):
    def __init__(self) -> None:
        super().__init__("watchdog", f"i6300esb {WATCHDOG_TIMEOUT_S} s, keepalive "
                                     f"{WATCHDOG_FEED_MS} ms, libvirt WATCHDOG event")


# ------------------------------------------------------------------ guests
class Control:
    """One control connection kept open: /init reads it without polling (a
    fresh connection each time may wait for its 100 ms EOF sleep)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = asyncio.Lock()
        self.rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __call__(self, command: str, timeout: float = 30.0) -> tuple[str, float]:
        """The answer (without "ok CMD") and when it came (monotonic)."""
        async with self.lock:
            if self.rw is None:
                self.rw = await asyncio.open_unix_connection(self.path)
            reader, writer = self.rw
            writer.write(command.encode() + b"\n")
            await writer.drain()
            word = command.split()[0]
            while True:
                line = (await asyncio.wait_for(reader.readline(), timeout)).decode().strip()
                if not line:
                    raise RuntimeError(f"control closed during {command!r}")
                if line.startswith(f"ok {word}"):
                    return line[3 + len(word):].strip(), time.monotonic()
                if line.startswith("err "):
                    raise RuntimeError(f"{command!r}: {line}")

    def close(self) -> None:
        if self.rw is not None:
            self.rw[1].close()


@dataclass
class Hang:
    t0: float
    ack_ms: float
    detect_ms: dict[int, float | None]  # probe index -> ms
    thaw: float = 0.0


@dataclass
class Bench:
    label: str
    guest: Any
    probes: list[Probe]
    ctl: Control
    hangs: int
    max_hang_s: float
    quiet_extra_s: float
    done: list[Hang] = field(default_factory=list)
    quiet: list[tuple[float, float]] = field(default_factory=list)

    async def ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(p.healthy() for p in self.probes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: not healthy again: " + ", ".join(
                    f"{p.name} {p.setting}" for p in self.probes if not p.healthy()))
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        for i in range(self.hangs):
            await self.ready()
            q0 = time.monotonic()
            await asyncio.sleep(random.uniform(1.5, 3.5 + self.quiet_extra_s))
            t0 = time.monotonic()
            _pids, ack = await self.ctl("freeze")
            self.quiet.append((q0, t0))
            deadline = t0 + self.max_hang_s
            while time.monotonic() < deadline and any(
                    p.first_after(t0) is None for p in self.probes):
                await asyncio.sleep(0.05)
            det = {}
            for k, p in enumerate(self.probes):
                d = p.first_after(t0)
                det[k] = None if d is None else round((d - t0) * 1000, 3)
            _pids, thaw = await self.ctl("thaw")
            await self.ctl(f"wdog {WATCHDOG_TIMEOUT_S},{WATCHDOG_FEED_MS}")
            for p in self.probes:
                if isinstance(p, Remote) and p.setting.startswith("Masakari"):
                    p.reset()
            self.done.append(Hang(t0, round((ack - t0) * 1000, 3), det, thaw))
            print(f"  {self.label} hang {i + 1}/{self.hangs}: " + ", ".join(
                f"{p.name} {'-' if det[k] is None else f'{det[k]:.0f}'}"
                for k, p in enumerate(self.probes)) + f" ms (freeze ack {ack - t0:.3f} s)",
                file=sys.stderr, flush=True)
        await self.ready()

    def slow(self, k: int) -> list[str]:
        """nfvha's detections later than two intervals, with its outputs meanwhile."""
        p = self.probes[k]
        if not isinstance(p, NfvhaProbe):
            return []
        return [f"guest {self.label} nfvha {p.setting}: hang {i + 1} declared after "
                f"{h.detect_ms[k]:.0f} ms (freeze acknowledged after {h.ack_ms:.0f} ms); "
                f"outputs (ms from the freeze): "
                f"{p.around(h.t0, 0.3, min(h.detect_ms[k] / 1000 + 0.05, 2.0))}"
                for i, h in enumerate(self.done)
                if h.detect_ms[k] is not None and h.detect_ms[k] > 2 * p.interval_ms]

    def misses(self, k: int) -> list[str]:
        """The hangs probe k did not declare, with nfvha's outputs meanwhile."""
        p = self.probes[k]
        out = []
        for i, h in enumerate(self.done):
            if h.detect_ms[k] is not None:
                continue
            why = "not declared"
            before = [d for d in p.decls() if h.t0 - 2.0 <= d <= h.thaw]
            if before:  # a streak that began before the freeze went on through it
                why = (f"declared {(before[0] - h.t0) * 1000:+.0f} ms from the freeze on a miss "
                       f"from before it (counted as a false alarm, not a detection)")
            out.append(f"guest {self.label} {p.name} {p.setting}: hang {i + 1} {why}"
                       + (f"; nfvha outputs (ms from the freeze): "
                          f"{p.around(h.t0, 0.5, min(h.thaw - h.t0, 1.5))}"
                          if isinstance(p, NfvhaProbe) else ""))
        return out

    def false_alarms(self, k: int) -> list[str]:
        """What probe k declared during quiet stretches: when, in which stretch."""
        p = self.probes[k]
        out = []
        for d in p.decls():
            kind = p.kind_at(d) if isinstance(p, NfvhaProbe) else "hang"
            for i, (a, b) in enumerate(self.quiet):
                if a < d <= b:
                    out.append(f"guest {self.label} {p.name} {p.setting}: {kind} "
                               f"{d - a:.2f} s into quiet stretch {i + 1} ({b - a:.2f} s)"
                               + (f"; nfvha outputs (ms from it): {p.around(d, 0.6, 0.05)}"
                                  if isinstance(p, NfvhaProbe) else ""))
            for i, h in enumerate(self.done):
                ev = p.evidence.get(d)
                if h.t0 <= d <= h.thaw and ev is not None and ev < h.t0:
                    out.append(f"guest {self.label} {p.name} {p.setting}: {kind} "
                               f"{(d - h.t0) * 1000:.0f} ms after freeze {i + 1}, its first "
                               f"miss {(h.t0 - ev) * 1000:.0f} ms before it")
        return out


async def unhealthy_check(rig: Any, b: Bench, wait_s: float = 5.0) -> dict[str, bool]:
    """The application unhealthy while kernel and agents run: who declares
    anything within wait_s."""
    await b.ready()
    t0 = time.monotonic()
    await b.ctl("unhealthy")
    await asyncio.sleep(wait_s)
    seen = {f"{p.name} {p.setting}": p.first_after(t0) is not None for p in b.probes}
    seen[f"nfvha {b.probes[0].setting}"] = any(  # its fault 'unhealthy', not another
        k == "unhealthy" and u == b.guest.uuid and m >= t0 for u, k, m in rig.seen.faults)
    await b.ctl("healthy")
    return seen


def measured_commit() -> str:
    """HEAD, the detector's files uncommitted at the start, and a digest of
    those files as this process loads them (a working tree changes)."""
    import hashlib

    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in DETECTOR_FILES))
    files = f"detector files sha256 {digest.hexdigest()[:12]}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *DETECTOR_FILES],
                               cwd=ROOT, capture_output=True, text=True).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        return f"unknown commit (not a git checkout), {files}"
    return head + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "") + \
        f" ({files})"


async def run(hangs: int, masakari_hangs: int) -> dict[str, Any]:
    from nfvha.cli.services import load_conf
    from nfvha.compute.libvirt_daemon import LibvirtDaemon, unavailable_reason
    from nfvha.demo import guest_image
    from nfvha.demo.qemu_libvirt import RecoveryRig

    why = unavailable_reason()
    if why:
        return {"skipped": why}
    commit = measured_commit()  # as the run starts: the compute agent loads these files now
    try:
        image = await asyncio.to_thread(lambda: guest_image.install(
            guest_image.build(kernel=guest_image.watchdog_kernel()), links=False))
    except SystemExit as exc:
        return {"skipped": f"guest image with a watchdog driver: {exc}"}
    import libvirt

    from nfvha.compute.sources.libvirt import ensure_event_loop

    default_ms = default_interval_ms()
    daemon = LibvirtDaemon()
    await asyncio.to_thread(daemon.start)
    tmp = Path(tempfile.mkdtemp(prefix="nfvha-bench-vm-"))
    rig = RecoveryRig(load_conf([]), daemon.uri, tmp, reporters=[Ack()])
    benches: list[Bench] = []
    worker = Worker()
    conn = None
    try:
        await rig.start(image)
        assert rig.fleet is not None
        ensure_event_loop()
        conn = libvirt.open(daemon.uri)
        dogs: dict[str, Watchdog] = {}

        def on_watchdog(_c: Any, dom: Any, _action: int, _o: Any) -> None:
            w = dogs.get(dom.UUIDString())
            if w is not None:
                w.declared.append(time.monotonic())

        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, on_watchdog,
                                    None)
        plan = [("A", 100, "direct", hangs), ("B", default_ms, "direct", hangs),
                ("C", default_ms, "libvirt", masakari_hangs)]
        t_boot = time.monotonic()
        guests = [await rig.fleet.add(label, interval_ms=ms, corrective_action="log",
                                      qga=qga, watchdog="none")
                  for label, ms, qga, _n in plan]
        for g in guests:
            if await rig.wait_enabled(g.uuid, 0.0, 300) is None:
                raise RuntimeError(f"guest {g.name} did not register:\n{g.console()}")
            if (await g.ask("qga", 60)) not in ("S", "R"):
                raise RuntimeError(f"qemu-ga does not run in {g.name}:\n{g.console()}")
        print(f"3 guests up in {time.monotonic() - t_boot:.0f} s", file=sys.stderr, flush=True)
        specs = []
        for (label, ms, qga, n), g in zip(plan, guests):
            setting = f"{ms} ms" + (" (default)" if ms == default_ms else "")
            probes: list[Probe] = [NfvhaProbe(setting, rig, g.uuid, ms)]
            if qga == "direct":
                specs.append({"kind": "qga", "label": label, "path": g.qga_path})
                probes.append(Remote("qemu-ga", _setting_qga(*QGA_FAST), worker, label))
            else:
                specs.append({"kind": "masakari", "label": label, "uri": daemon.uri,
                              "uuid": g.uuid})
                probes.append(Remote("qemu-ga", _setting_masakari(*MASAKARI), worker, label))
            dogs[g.uuid] = Watchdog()
            probes.append(dogs[g.uuid])
            ctl = Control(g.control_path)
            await ctl(f"wdog {WATCHDOG_TIMEOUT_S},{WATCHDOG_FEED_MS}")
            benches.append(Bench(label, g, probes, ctl, n,
                                 max_hang_s=120.0 if qga == "libvirt" else 10.0,
                                 quiet_extra_s=MASAKARI[0] if qga == "libvirt" else 0.0))
        await worker.start(specs)
        await asyncio.gather(*(b.run() for b in benches))
        unhealthy = await unhealthy_check(rig, benches[0])
    finally:
        await worker.stop()
        for b in benches:
            b.ctl.close()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        await rig.stop()
        await asyncio.to_thread(daemon.stop)
        shutil.rmtree(tmp, ignore_errors=True)

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    false_list: list[str] = []
    missed_list: list[str] = []
    slow_list: list[str] = []
    for b in benches:
        for k, p in enumerate(b.probes):
            row = rows.setdefault((p.name, p.setting), {
                "name": p.name, "setting": p.setting, "samples": [], "settled": [],
                "missed": 0, "false_alarms": 0, "quiet_s": 0.0})
            for h in b.done:
                if h.detect_ms[k] is None:
                    row["missed"] += 1
                else:
                    row["samples"].append(h.detect_ms[k])
                    if h.ack_ms <= STALLED_ACK_MS:
                        row["settled"].append(h.detect_ms[k])
            slow_list.extend(b.slow(k))
            alarms = b.false_alarms(k)
            row["false_alarms"] += len(alarms)
            false_list.extend(alarms)
            missed_list.extend(b.misses(k))
            row["quiet_s"] += sum(q1 - q0 for q0, q1 in b.quiet)
    acks = [h.ack_ms for b in benches for h in b.done]
    methods = []
    for row in rows.values():
        xs, ys = row.pop("samples"), row.pop("settled")
        row.update(n=len(xs), median_ms=pct(xs, 0.5), p99_ms=pct(xs, 0.99),
                   min_ms=min(xs) if xs else None, max_ms=max(xs) if xs else None,
                   settled={"n": len(ys), "median_ms": pct(ys, 0.5), "p99_ms": pct(ys, 0.99),
                            "max_ms": max(ys) if ys else None})
        methods.append(row)
    return {"methods": methods, "default_interval_ms": default_ms,
            "commit": commit, "freeze_ack_ms": {
                "median": statistics.median(acks) if acks else None,
                "max": max(acks) if acks else None},
            "unhealthy_seen": unhealthy, "false_alarm_list": false_list,
            "missed_list": missed_list, "slow_list": slow_list,
            "stalled_hangs": sum(h.ack_ms > STALLED_ACK_MS for b in benches for h in b.done)}


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _ratio(x: float | None, ref: float | None) -> str:
    return "-" if x is None or not ref else f"{x / ref:.1f}x"


def report(doc: dict[str, Any], out: Any) -> None:
    ms = doc["methods"]
    ref = next((m for m in ms if m["name"] == "nfvha" and "default" in m["setting"]), None)
    fast = next((m for m in ms if m["name"] == "nfvha" and m["setting"].startswith("100 ")),
                None)
    print(f"hang detection on real QEMU guests (TCG, libvirt), one run; measured at "
          f"{doc['commit']}; freeze command answered after median "
          f"{_f(doc['freeze_ack_ms']['median'])} ms (max {_f(doc['freeze_ack_ms']['max'])}): "
          f"the freeze happened within that, every method is timed from the send", file=out)
    print(f"ratios: to nfvha at its default interval ({doc['default_interval_ms']} ms)",
          file=out)
    print(f"{'method':9} {'setting':62} {'n':>3} {'median':>7} {'p99':>7} {'range':>13} "
          f"{'med x':>6} {'p99 x':>6} {'missed':>6} {'false':>5}", file=out)
    for m in ms:
        rng = "-" if m["min_ms"] is None else f"{m['min_ms']:.0f}-{m['max_ms']:.0f}"
        print(f"{m['name']:9} {m['setting'][:62]:62} {m['n']:>3} {_f(m['median_ms']):>7} "
              f"{_f(m['p99_ms']):>7} {rng:>13} "
              f"{_ratio(m['median_ms'], ref and ref['median_ms']):>6} "
              f"{_ratio(m['p99_ms'], ref and ref['p99_ms']):>6} {m['missed']:>6} "
              f"{m['false_alarms']:>5}", file=out)
    qfast = next((m for m in ms if m["name"] == "qemu-ga" and m["setting"].startswith(
        "guest-ping 100")), None)
    if fast and qfast and fast["p99_ms"] and qfast["p99_ms"]:
        r = fast["p99_ms"] / qfast["p99_ms"]
        print(f"target (nfvha p99 <= half the 100 ms qemu-ga ping's): nfvha 100 ms p99 "
              f"{fast['p99_ms']:.0f} ms / qemu-ga {qfast['p99_ms']:.0f} ms = {r:.2f} "
              f"({'met' if r <= 0.5 else 'NOT met'})", file=out)
    print("false = hangs declared during quiet stretches (no hang); quiet time per method: "
          + ", ".join(f"{m['name']} {m['setting'].split(':')[0][:24]} {m['quiet_s']:.0f} s"
                      for m in ms), file=out)
    for line in doc["false_alarm_list"]:
        print(f"  false alarm: {line}", file=out)
    for line in doc["missed_list"]:
        print(f"  missed: {line}", file=out)
    for line in doc["slow_list"]:
        print(f"  slow: {line}", file=out)
    if doc["stalled_hangs"]:
        print(f"without the {doc['stalled_hangs']} hang(s) whose freeze was acknowledged after "
              f"more than {STALLED_ACK_MS:.0f} ms (the guest stalled as it was sent: every "
              f"method's figure for them includes the stall):", file=out)
        for m in ms:
            st = m["settled"]
            print(f"  {m['name']:9} {m['setting'][:62]:62} {st['n']:>3} "
                  f"{_f(st['median_ms']):>7} {_f(st['p99_ms']):>7} max {_f(st['max_ms'])}",
                  file=out)
    seen = doc["unhealthy_seen"]
    print("the application unhealthy (health check failing; kernel and agents run), 5 s: "
          + "; ".join(f"{k}: {'declared' if v else 'not seen'}" for k, v in seen.items()),
          file=out)
    print("cannot see: qemu-ga ping and watchdog see only that qemu-ga / the feeder runs: "
          "not an unhealthy application, nor a hung application whose agent still "
          "answers; the watchdog also needs the guest kernel driver and one fixed "
          "action; nfvha sees what its health probes check, in the guest agent's process",
          file=out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--short", "--quick", action="store_true",
                    help="5 hangs per fast method, 1 for Masakari (about 3 minutes)")
    ap.add_argument("--hangs", type=int, default=20, help="hangs of guests A and B each")
    ap.add_argument("--masakari-hangs", type=int, default=20,
                    help="hangs of guest C (Masakari's monitor: ~1 min each, so the "
                         "default run takes ~25 min)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--monitor-worker", metavar="SPECS", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.monitor_worker:
        asyncio.run(monitor_worker(json.loads(args.monitor_worker)))
        return 0
    if args.short:
        args.hangs, args.masakari_hangs = 5, 1
    logging.basicConfig(level=logging.ERROR)
    doc = asyncio.run(run(args.hangs, args.masakari_hangs))
    if "skipped" in doc:
        print(f"side-by-side on real guests: skipped ({doc['skipped']})",
              file=sys.stderr if args.json else sys.stdout)
        if args.json:
            print(json.dumps({"methods": []}))
        return 0
    report(doc, sys.stderr if args.json else sys.stdout)
    if args.json:
        keys = ("name", "setting", "n", "median_ms", "p99_ms", "false_alarms")
        print(json.dumps({"methods": [{k: m[k] for k in keys} for m in doc["methods"]]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
