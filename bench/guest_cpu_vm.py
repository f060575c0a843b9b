"""The guest agent's own CPU, measured inside a real QEMU guest: the share
of the guest's vCPU that nfvha-guest takes at a 100 ms heartbeat, at its
default interval, and the guest with the agent stopped (the baseline).

One TCG guest of the project's image under a real libvirtd, with the
controller and compute agent in this process heartbeating it (libvirt
source, as ``nfvha demo --qemu`` wires it: nfvha/demo/qemu_libvirt.py
RecoveryRig; corrective action ``log``, so nothing is reset). Per window the
guest agent is restarted through the guest's control port (/init's ``term``,
``wait``, ``start ARGS``: ``start`` answers the new agent's pid), the host
waits until it has registered, then ``--settle`` seconds (its start-up is
not counted), then the window. The guest's files are read through qemu-ga
on a socket of its own (the fleet's ``qga="direct"``: guest-file-open/read,
so no process is started in the guest to read them) at the start and end of
each window:

- /proc/<agent pid>/stat utime + stime (the kernel scales them to the
  process's exact runtime) and /proc/<pid>/schedstat (ns on CPU, the main
  thread: a cross-check), over the guest's own clock (/proc/uptime) x
  USER_HZ: the agent's % of one vCPU;
- /proc/stat's cpu line: the guest's total busy share (all but idle and
  iowait), for scale; with the agent running less the stopped window's, the
  agent's whole cost in the guest including the kernel's work for it
  (virtio interrupts are charged to whoever they interrupt);
- on the host: the QEMU process's CPU (utime + stime) as % of one host core,
  the challenges the compute agent sent the guest, and the bytes the guest
  wrote to its serial console (an agent that logged every heartbeat would
  show there, and serial output is dear under TCG).

The control and qemu-ga connections stay open for the whole run: /init's
control loop and qemu-ga poll their ports when no host is connected, which
would add to the guest's busy share.

TCG emulates every guest instruction: guest CPU time is inflated many times
over what the same work takes under KVM, so these figures are an upper bound
for a KVM guest. For scale, after the windows the agent's own interpreter
runs the same Python code (json round trips) in the guest (qemu-ga
guest-exec, with the agent's PYTHONHOME) and on the host: the ratio of their
CPU times is TCG's slowdown of that interpreter, and the agent's share
divided by it a rough estimate at native speed (kernel and virtio work do not
scale the same way, so an estimate, not a measurement).

    python bench/guest_cpu_vm.py [--window 60] [--settle 5] [--rounds 1] [--quick] [--json]

Needs root, QEMU and libvirt (make setup) and qemu-ga on the host (it goes
into the image); without them it says so and exits 0. Takes a whole host
core while it runs: run it alone (flock /tmp/bench.lock ...).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from vm_side_by_side import Ack, Control, default_interval_ms  # noqa: E402

# /proc/stat and /proc/<pid>/stat count in USER_HZ ticks: 100 on x86 by ABI
# (the run checks it against the guest's clock: ticks_per_s)
USER_HZ = 100
HEARTBEAT_DEVICE = "/dev/virtio-ports/cgcs.heartbeat"
# the image's own default probe (/init's NFVHA_AGENT_ARGS), at the file
# probe's default period (100 ms)
DEFAULT_PROBE = "file:/run/nfvha/healthy"
# TCG's slowdown of the agent's interpreter: the same python binary (the image
# carries the host's) runs this in the guest and on the host; CPU seconds each
CALIBRATION = ("import json, time\n"
               "t = time.process_time()\n"
               "for i in range(20000):\n"
               "    json.loads(json.dumps({'seq': i, 'msg_type': 'challenge', 'n': 'x' * 32}))\n"
               "print(time.process_time() - t)\n")


# ------------------------------------------------------------------ /proc
def pid_cpu_ticks(stat: str) -> tuple[int, str, int]:
    """(utime + stime, state, starttime) from a /proc/<pid>/stat line, in ticks."""
    # comm (field 2) may hold spaces and parentheses: fields 3.. follow the last ')'
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12]), rest[0], int(rest[19])  # fields 14, 15, 3, 22


def pid_comm(stat: str) -> str:
    return stat[stat.index("(") + 1:stat.rindex(")")]


def cpu_totals(stat: str) -> tuple[int, int, int]:
    """(all ticks, idle + iowait ticks, CPUs) from /proc/stat."""
    total = idle = ncpu = 0
    for line in stat.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "cpu":
            # user nice system idle iowait irq softirq steal; guest and
            # guest_nice (fields 9, 10) are already counted in user and nice
            v = [int(x) for x in f[1:9]]
            total, idle = sum(v), v[3] + (v[4] if len(v) > 4 else 0)
        elif f[0][3:].isdigit() and f[0].startswith("cpu"):
            ncpu += 1
    return total, idle, ncpu


@dataclass
class Snapshot:
    mono: float                 # host CLOCK_MONOTONIC when the reads began
    uptime: float               # the guest's /proc/uptime
    total: int                  # /proc/stat cpu line, ticks
    idle: int
    ncpu: int
    agent: int | None = None    # the agent's utime + stime, ticks
    agent_start: int | None = None
    agent_state: str = ""
    sched_ns: int | None = None  # /proc/<pid>/schedstat: ns on CPU
    qemu_host_s: float = 0.0    # QEMU's utime + stime on the host, s
    console_bytes: int = 0
    challenges: int = 0


def window_figures(a: Snapshot, b: Snapshot, user_hz: int = USER_HZ) -> dict[str, Any]:
    """What one window measured, from its first and last snapshot."""
    secs = b.uptime - a.uptime          # the guest's clock
    total, idle = b.total - a.total, b.idle - a.idle
    wall = b.mono - a.mono
    out: dict[str, Any] = {
        "guest_s": round(secs, 3), "wall_s": round(wall, 3), "vcpus": b.ncpu,
        "busy_pct": 100.0 * (total - idle) / total if total else None,
        # ~USER_HZ when the guest's tick accounting keeps up with its clock
        "ticks_per_s": total / secs / max(b.ncpu, 1) if secs else None,
        "qemu_host_pct": 100.0 * (b.qemu_host_s - a.qemu_host_s) / wall if wall else None,
        "console_bytes": b.console_bytes - a.console_bytes,
        "challenges_per_s": (b.challenges - a.challenges) / wall if wall else None,
    }
    if a.agent is not None and b.agent is not None:
        if a.agent_start != b.agent_start:
            raise RuntimeError("the agent restarted during the window")
        ticks = b.agent - a.agent
        out.update(agent_cpu_s=ticks / user_hz,
                   agent_pct=100.0 * ticks / (secs * user_hz) if secs else None,
                   agent_state=b.agent_state)
        if a.sched_ns is not None and b.sched_ns is not None and secs:
            out["agent_sched_pct"] = 100.0 * (b.sched_ns - a.sched_ns) / (secs * 1e9)
    return out


# ------------------------------------------------------------------ qemu-ga
class Qga:
    """qemu-ga on its own socket, one connection kept open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.n = 0
        self.rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self, execute: str, timeout: float = 30.0, **arguments: Any) -> Any:
        if self.rw is None:
            self.rw = await asyncio.open_unix_connection(self.path, limit=1 << 22)
        reader, writer = self.rw
        self.n += 1
        msg: dict[str, Any] = {"execute": execute, "id": self.n}
        if arguments:
            msg["arguments"] = arguments
        writer.write(json.dumps(msg).encode() + b"\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                raise RuntimeError(f"qemu-ga closed its socket during {execute}")
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("id") != self.n:  # a late answer to an earlier call
                continue
            if "error" in doc:
                raise RuntimeError(f"qemu-ga {execute} {arguments}: {doc['error']}")
            return doc.get("return")

    async def run(self, argv: list[str], env: list[str], timeout: float = 300.0) -> str:
        """argv in the guest (guest-exec), its stdout once it has exited."""
        pid = (await self.call("guest-exec", path=argv[0], arg=argv[1:], env=env,
                               **{"capture-output": True}))["pid"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = await self.call("guest-exec-status", pid=pid)
            if st.get("exited"):
                out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
                if st.get("exitcode"):
                    err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                    raise RuntimeError(f"{argv[0]} exited {st['exitcode']} in the guest: "
                                       f"{err[-500:]}")
                return out
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{argv[0]} still running in the guest after {timeout:.0f} s")

    async def read(self, path: str) -> str:
        handle = await self.call("guest-file-open", path=path, mode="r")
        chunks = []
        try:
            while True:
                got = await self.call("guest-file-read", handle=handle, count=1 << 16)
                chunks.append(base64.b64decode(got.get("buf-b64", "")))
                if got.get("eof") or not got.get("count"):
                    break
        finally:
            await self.call("guest-file-close", handle=handle)
        return b"".join(chunks).decode(errors="replace")

    def close(self) -> None:
        if self.rw is not None:
            self.rw[1].close()


# ------------------------------------------------------------------ run
def agent_args(interval_ms: int, probe: str) -> str:
    words = ["--device", HEARTBEAT_DEVICE, "--interval-ms", str(interval_ms),
             "--corrective-action", "log"]
    if probe:
        words += ["--probe", probe]
    return " ".join(words)


def host_cpu_s(pid: int) -> float:
    ticks, _state, _start = pid_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    return ticks / os.sysconf("SC_CLK_TCK")


async def calibrate(qga: Qga, pid: int, repeat: int = 3) -> dict[str, Any]:
    """CALIBRATION's CPU seconds in the guest (the agent's interpreter and
    PYTHONHOME, read from its /proc) and on the host, best of `repeat` each."""
    python = (await qga.read(f"/proc/{pid}/cmdline")).split("\0")[0]
    env = [e for e in (await qga.read(f"/proc/{pid}/environ")).split("\0")
           if e.startswith("PYTHON")]
    guest = [float(await qga.run([python, "-c", CALIBRATION], env)) for _ in range(repeat)]
    host = [float(subprocess.run([python, "-c", CALIBRATION], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(repeat)]
    return {"python": python, "guest_s": min(guest), "host_s": min(host),
            "slowdown": min(guest) / min(host)}


def measured_commit() -> str:
    """HEAD, and the guest agent's sources if they differ from it (the image
    carries the working tree's)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nfvha/guest",
                                "nfvha/protocol"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit (not a git checkout)"
    return head + (" + uncommitted changes in nfvha/guest or nfvha/protocol" if dirty else "")


async def run(window: float, settle: float, rounds: int, probe: str) -> dict[str, Any]:
    from nfvha.cli.services import load_conf
    from nfvha.compute.libvirt_daemon import LibvirtDaemon, unavailable_reason
    from nfvha.demo.libvirt_guests import prepare_image

    why = unavailable_reason()
    if why:
        return {"skipped": why}
    try:
        image = await asyncio.to_thread(prepare_image)
    except SystemExit as exc:
        return {"skipped": f"guest image: {exc}"}
    if not image.qemu_ga:
        return {"skipped": "no qemu-ga in the guest image (apt-get install qemu-guest-agent)"}
    from nfvha.demo.qemu_libvirt import RecoveryRig

    default_ms = default_interval_ms()
    plan: list[tuple[str, int | None]] = [("stopped", None), ("100 ms", 100),
                                          (f"{default_ms} ms (default)", default_ms)]
    commit = measured_commit()
    started = datetime.now(timezone.utc)
    load0 = os.getloadavg()
    daemon = LibvirtDaemon()
    await asyncio.to_thread(daemon.start)
    tmp = Path(tempfile.mkdtemp(prefix="nfvha-bench-guestcpu-"))
    rig = RecoveryRig(load_conf([]), daemon.uri, tmp, reporters=[Ack()])
    rows: list[dict[str, Any]] = []
    calibration: dict[str, Any] = {}
    ctl: Control | None = None
    qga: Qga | None = None
    try:
        await rig.start(image)
        assert rig.fleet is not None
        g = await rig.fleet.add("cpu", interval_ms=default_ms, corrective_action="log",
                                qga="direct")
        assert g.qga_path is not None
        t_boot = time.monotonic()
        if await rig.wait_enabled(g.uuid, 0.0, 300) is None:
            raise RuntimeError(f"guest {g.name} did not register:\n{g.console()}")
        if (await g.ask("qga", 60)) not in ("S", "R"):
            raise RuntimeError(f"qemu-ga does not run in {g.name}:\n{g.console()}")
        print(f"guest up in {time.monotonic() - t_boot:.0f} s", file=sys.stderr, flush=True)
        challenges = [0]

        def count(uuid: str, out: Any, _mono: float) -> None:
            if uuid == g.uuid and type(out).__name__ == "Send" \
                    and out.msg.get("msg_type") == "challenge":
                challenges[0] += 1

        rig.stack.compute.add_observer(count)
        domain_type = (await asyncio.to_thread(lambda: g.domain().XMLDesc(0))).split(
            "type='", 1)[1].split("'", 1)[0]
        ctl, qga = Control(g.control_path), Qga(g.qga_path)
        uname = (await qga.read("/proc/version")).split()[2]
        qemu_pid = g.qemu_pid()

        async def snapshot(pid: int | None) -> Snapshot:
            assert qga is not None
            mono = time.monotonic()
            uptime = float((await qga.read("/proc/uptime")).split()[0])
            s = Snapshot(mono, uptime, *cpu_totals(await qga.read("/proc/stat")),
                         qemu_host_s=host_cpu_s(qemu_pid),
                         console_bytes=g.console_log.stat().st_size,
                         challenges=challenges[0])
            if pid is not None:
                s.agent, s.agent_state, s.agent_start = pid_cpu_ticks(
                    await qga.read(f"/proc/{pid}/stat"))
                with contextlib.suppress(RuntimeError):  # no CONFIG_SCHED_INFO
                    s.sched_ns = int((await qga.read(f"/proc/{pid}/schedstat")).split()[0])
            return s

        comm = ""
        for rnd in range(1, rounds + 1):
            for label, ms in plan:
                await ctl("term")
                await ctl("wait")
                pid = None
                if ms is not None:
                    t0 = time.monotonic()
                    answer, _ = await ctl(f"start {agent_args(ms, probe)}")
                    pid = int(answer)
                    if await rig.wait_enabled(g.uuid, t0, 120) is None:
                        raise RuntimeError(f"the agent did not register at {ms} ms:\n"
                                           f"{g.console()}")
                    comm = pid_comm(await qga.read(f"/proc/{pid}/stat"))
                await asyncio.sleep(settle)
                la = os.getloadavg()[0]
                a = await snapshot(pid)
                await asyncio.sleep(window)
                b = await snapshot(pid)
                row = {"round": rnd, "agent": label, "interval_ms": ms, "pid": pid,
                       "host_load1": [round(la, 2), round(os.getloadavg()[0], 2)],
                       **window_figures(a, b)}
                rows.append(row)
                print(f"  round {rnd} {label}: " + (
                    f"agent {row['agent_pct']:.3f} % vCPU, " if ms else "")
                    + f"guest busy {row['busy_pct']:.2f} %", file=sys.stderr, flush=True)
        # outside every window: a process of its own in the guest, with the
        # interpreter and environment of the agent (running: exec'd, registered)
        await ctl("term")
        await ctl("wait")
        t0 = time.monotonic()
        answer, _ = await ctl(f"start {agent_args(default_ms, probe)}")
        if await rig.wait_enabled(g.uuid, t0, 120) is None:
            raise RuntimeError(f"the agent did not register again:\n{g.console()}")
        calibration = await calibrate(qga, int(answer))
        await ctl("term")
        await ctl("wait")
    finally:
        if ctl is not None:
            ctl.close()
        if qga is not None:
            qga.close()
        await rig.stop()
        await asyncio.to_thread(daemon.stop)
        shutil.rmtree(tmp, ignore_errors=True)
    base = {r["round"]: r["busy_pct"] for r in rows if r["interval_ms"] is None}
    for r in rows:
        if r["interval_ms"] is not None and r["busy_pct"] is not None \
                and base.get(r["round"]) is not None:
            r["busy_over_stopped_pp"] = r["busy_pct"] - base[r["round"]]
    return {
        "rows": rows, "calibration": calibration, "commit": commit,
        "date_utc": started.strftime("%Y-%m-%d %H:%M"),
        "window_s": window, "settle_s": settle, "default_interval_ms": default_ms,
        "agent_args": agent_args(0, probe).replace("--interval-ms 0", "--interval-ms N"),
        "agent_comm": comm, "guest": {
            "domain_type": domain_type, "accel": "TCG" if domain_type == "qemu" else domain_type,
            "vcpus": rows[0]["vcpus"] if rows else None, "memory_mib": rig.fleet.memory_mib
            if rig.fleet else None, "kernel": uname, "python": image.python_version},
        "host": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(),
                 "load1_start": round(load0[0], 2), "load1_end": round(os.getloadavg()[0], 2)},
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def report(doc: dict[str, Any], out: Any) -> None:
    gu, ho = doc["guest"], doc["host"]
    print(f"guest agent CPU inside a real QEMU guest, {doc['date_utc']} UTC, measured at "
          f"{doc['commit']}", file=out)
    print(f"guest: {gu['vcpus']} vCPU, {gu['accel']} (libvirt domain type "
          f"'{gu['domain_type']}'), {gu['memory_mib']} MiB, kernel {gu['kernel']}, "
          f"Python {gu['python']}; agent: {doc['agent_comm'] or 'python'} -m nfvha.guest "
          f"{doc['agent_args']}", file=out)
    print(f"host: {ho['cpus']} CPUs ({ho['cpu_model']}), load average {ho['load1_start']} "
          f"at the start, {ho['load1_end']} at the end; compute agent + controller in the "
          f"bench's process (libvirt source)", file=out)
    print(f"windows of {doc['window_s']:.0f} s (guest clock) after {doc['settle_s']:.0f} s "
          f"of settling, the agent restarted before each; agent % = its utime+stime "
          f"(/proc/<pid>/stat) over the window's ticks of one vCPU", file=out)
    print(f"{'rnd':>3} {'guest agent':18} {'chal/s':>6} {'agent CPU s':>11} "
          f"{'agent %vCPU':>11} {'(schedstat)':>11} {'guest busy %':>12} "
          f"{'over stopped':>12} {'QEMU host %':>11} {'console B':>9} {'load1':>10}",
          file=out)
    for r in doc["rows"]:
        print(f"{r['round']:>3} {r['agent']:18} {_f(r['challenges_per_s'], '.1f'):>6} "
              f"{_f(r.get('agent_cpu_s'), '.2f'):>11} {_f(r.get('agent_pct'), '.3f'):>11} "
              f"{_f(r.get('agent_sched_pct'), '.3f'):>11} {_f(r['busy_pct'], '.2f'):>12} "
              f"{_f(r.get('busy_over_stopped_pp'), '+.2f'):>12} "
              f"{_f(r['qemu_host_pct'], '.1f'):>11} {r['console_bytes']:>9} "
              f"{r['host_load1'][0]:>4.2f}-{r['host_load1'][1]:<4.2f}", file=out)
    hz = [r["ticks_per_s"] for r in doc["rows"] if r["ticks_per_s"]]
    if hz:
        print(f"guest ticks per vCPU-second over the windows: {min(hz):.1f}-{max(hz):.1f} "
              f"(USER_HZ {USER_HZ})", file=out)
    print("guest busy is /proc/stat's tick sampling, which misses part of bursts shorter "
          "than a tick (10 ms): below the agent's own share at times; the agent's figures "
          "are its exact runtime (schedstat agrees)", file=out)
    print("over stopped = guest busy less the stopped window's of the same round (the "
          "agent's whole cost in the guest, kernel work included), percentage points; "
          "QEMU host % = the QEMU process's CPU as % of one host core", file=out)
    cal = doc.get("calibration")
    if cal:
        fast = [r for r in doc["rows"] if r.get("agent_pct") is not None]
        print(f"TCG slowdown of the agent's interpreter ({cal['python']}, the same binary, "
              f"json round trips, best of 3): {cal['guest_s']:.2f} s of CPU in the guest, "
              f"{cal['host_s']:.3f} s on the host = {cal['slowdown']:.0f}x; the agent's "
              "share at the host's speed (a rough KVM estimate: its kernel and virtio work "
              "do not scale so): " + ", ".join(
                  f"{r['agent']} ~{r['agent_pct'] / cal['slowdown']:.3f} %" for r in fast),
              file=out)
    print(f"{gu['accel']}: every guest instruction is emulated, so guest CPU time is "
          "inflated many times over KVM's; these figures are an upper bound for a KVM "
          "guest", file=out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--window", type=float, default=60.0, help="seconds per window")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds between the agent's registration and its window")
    ap.add_argument("--rounds", type=int, default=1,
                    help="times the three windows (stopped, 100 ms, default) are run")
    ap.add_argument("--probe", default=DEFAULT_PROBE,
                    help=f"the agent's health probe (default {DEFAULT_PROBE}, the "
                         "image's; '' for none)")
    ap.add_argument("--quick", "--short", action="store_true", help="10 s windows")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.window, args.settle = 10.0, 3.0
    logging.basicConfig(level=logging.ERROR)
    doc = asyncio.run(run(args.window, args.settle, args.rounds, args.probe))
    if "skipped" in doc:
        print(f"guest agent CPU in a VM: skipped ({doc['skipped']})",
              file=sys.stderr if args.json else sys.stdout)
        if args.json:
            print(json.dumps({"rows": []}))
        return 0
    report(doc, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
