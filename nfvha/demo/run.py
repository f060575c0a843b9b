"""`nfvha demo`: controller, compute agent and real guest agents in one go.

Each simulated VM is a real `nfvha-guest` process talking through a
pseudo-terminal that stands in for its virtio-serial port (qemu_pty.py). The
demo injects one fault per guest, and measures on one monotonic clock:
injection → detection (the compute agent's fault output) and detection →
the report reaching a sink (a real webhook receiver).

The guests also form one server group (demo/servergroup.py): a broadcast
from each reaches all the others, the hang fault of a member reaches its
peers as a notification, and a status query shows every member.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nfvha.demo.operations import agent_silence, planned_delete
from nfvha.demo.qemu_pty import PtyChannel
from nfvha.demo.servergroup import DemoGroup
from nfvha.demo.webhook_sink import WebhookSink

# (kind label, expected fault kind or None for "no alarm")
FAULTS: list[tuple[str, str | None]] = [
    ("hang", "heartbeat_loss"),
    ("unhealthy", "unhealthy"),
    ("channel_cut", "channel_lost"),
    ("clean_exit", None),
    ("restart", None),
]


@dataclass
class Guest:
    uuid: str
    channel: PtyChannel
    device: Path
    health_file: Path
    proc: asyncio.subprocess.Process | None = None


@dataclass
class Observed:
    faults: list[tuple[str, str, float]] = field(default_factory=list)  # uuid, kind, mono
    states: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def _iso(mono: float | None, anchor: tuple[float, datetime]) -> str | None:
    if mono is None:
        return None
    return (anchor[1] + timedelta(seconds=mono - anchor[0])).isoformat(timespec="microseconds")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q * (len(ordered) - 1)))))
    return ordered[k]


# The guests' event script: a VNF that refuses to be live-migrated (say, a
# checkpoint is running) and accepts everything else.
VOTE_SCRIPT = """#!/bin/sh
[ "$1 $2" = "revocable live_migrate_begin" ] && { echo "checkpoint running" >&2; exit 1; }
exit 0
"""
VOTES = [("live_migrate_begin", "reject"), ("stop", "accept")]


async def _start_guest(g: Guest, interval_ms: int) -> None:
    script = g.health_file.parent / "vote.sh"
    if not script.exists():
        script.write_text(VOTE_SCRIPT)
        script.chmod(0o755)
    g.proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.guest", "--device", str(g.device),
        "--interval-ms", str(interval_ms), "--corrective-action", "reboot",
        "--name", f"demo-{g.uuid[:8]}",
        "--probe", f"file:{g.health_file},period_ms=50", "--event-script", str(script),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def _ask_votes(api_url: str, instance: str) -> list[dict[str, Any]]:
    """What an orchestrator does before acting on a VM: ask its guest."""
    import httpx

    out = []
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for action, expected in VOTES:
            t0 = time.monotonic()
            r = await http.post(f"/v1/instances/{instance}/actions", json={"action": action})
            ms = (time.monotonic() - t0) * 1000
            answer = r.json() if r.status_code == 200 else {"result": f"HTTP {r.status_code}"}
            out.append({"instance": instance, "action": action,
                        "result": answer.get("result"), "proceed": answer.get("proceed"),
                        "log_msg": answer.get("log_msg", ""), "expected": expected,
                        "latency_ms": round(ms, 3)})
    return out


async def _wait_state(obs: Observed, uuid_: str, state: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while obs.states.get(uuid_) != state:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        obs.changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(obs.changed.wait(), left)
    return True


async def _wait_fault(obs: Observed, uuid_: str, kind: str, after: float,
                      timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while True:
        for u, k, mono in obs.faults:
            if u == uuid_ and k == kind and mono >= after:
                return mono
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        obs.changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(obs.changed.wait(), left)


async def run_demo(conf: Any, *, guests: int = 5, interval_ms: int = 200, rounds: int = 1,
                   as_json: bool = False) -> int:
    from nfvha.cli.services import build_reporters, start_stack

    say = (lambda *a: None) if as_json else print  # noqa: E731
    tmp = Path(tempfile.mkdtemp(prefix="nfvha-demo-"))
    instances_dir = tmp / "instances"
    devices = tmp / "dev"
    instances_dir.mkdir()
    devices.mkdir()
    anchor = (time.monotonic(), datetime.now(timezone.utc))
    sink = WebhookSink()
    sink_url = await sink.start()
    obs = Observed()
    stack = None
    gs: list[Guest] = []
    group: DemoGroup | None = None
    # the compute agent reports every 0.2 s, so its silence shows within 1 s
    conf.set_override("agent_report_interval_s", 0.2, group="heartbeat")
    conf.set_override("agent_down_after_s", 1.0, group="heartbeat")
    try:
        reporters = build_reporters(conf, extra_webhook=sink_url)
        stack = await start_stack(conf, controller=True, compute=True, transport_url="inproc://",
                                  db_url=f"sqlite:///{tmp / 'nfvha.sqlite'}",
                                  instances_dir=str(instances_dir), api="127.0.0.1:0",
                                  reporters=reporters, host="demo-compute")

        def observe(instance_uuid: str, output: Any, mono: float) -> None:
            name = type(output).__name__
            if name == "Fault":
                obs.faults.append((instance_uuid, output.kind, mono))
            elif name == "StateChanged":
                obs.states[instance_uuid] = output.state
            obs.changed.set()

        stack.compute.add_observer(observe)
        say(f"nfvha demo: controller + compute agent up (REST API {stack.api_url}), "
            f"{guests} guests at {interval_ms} ms, reports to a webhook at {sink_url}")

        for _ in range(guests):
            u = str(uuid.uuid4())
            ch = PtyChannel(instances_dir / f"cgcs.heartbeat.{u}.sock", devices / u)
            await ch.start()
            g = Guest(u, ch, devices / u, tmp / f"{u}.healthy")
            g.health_file.touch()
            await _start_guest(g, interval_ms)
            gs.append(g)
        for g in gs:
            if not await _wait_state(obs, g.uuid, "enabled", 20):
                say(f"guest {g.uuid} did not register")
                return 1
        say(f"all {guests} guests registered and heartbeating\n")

        group = DemoGroup(instances_dir, devices, [g.uuid for g in gs], stack.api_url)
        channels = stack.compute.messaging.sessions
        await group.start(lambda: len(channels) == guests and all(
            c.transport is not None for c in channels.values()))
        say(f"server group 'demo' (PUT /v1/server-groups/demo): {guests} members, each with "
            "a cgcs.messaging channel")
        for b in await group.broadcast_from_each():
            lat = b["latency_ms"].values()
            say(f"  broadcast from {b['from'][:8]}: delivered to {len(b['delivered_to'])}/"
                f"{guests - 1} peers, latency max {max(lat, default=0):.1f} ms")
        say("")
        peer_failures: list[dict[str, Any]] = []

        results: list[dict[str, Any]] = []
        plan = [(FAULTS[i % len(FAULTS)], gs[i % len(gs)])
                for _ in range(rounds) for i in range(max(guests, len(FAULTS)))]
        say(f"{'fault':12} {'instance':36} {'expected':15} {'detect_ms':>9} {'report_ms':>9}")
        for (label, kind), g in plan:
            res = await _inject(label, kind, g, obs, sink, interval_ms, anchor)
            results.append(res)
            d = "-" if res["detect_ms"] is None else f"{res['detect_ms']:.1f}"
            r = "-" if res["report_ms"] is None else f"{res['report_ms']:.1f}"
            exp = kind or "no alarm"
            say(f"{label:12} {g.uuid:36} {exp:15} {d:>9} {r:>9}  {res['_verdict']}")
            if label == "hang":
                # the peers hear of it: nfvha heartbeat failed → notification
                seen = await group.wait_failure_seen(g.uuid, "failed", res["_mono"])
                detected = res["_mono"] + (res["detect_ms"] or 0) / 1000
                peer_failures.append({
                    "instance": g.uuid, "heartbeat": "failed",
                    "seen_by": sorted(seen),
                    "since_injection_ms": seen,
                    "since_detection_ms": {k: round(v - (detected - res["_mono"]) * 1000, 3)
                                           for k, v in seen.items()}})
            await _repair(label, g, obs, interval_ms)

        votes = await _ask_votes(stack.api_url, gs[0].uuid)
        status = await group.query_status()
        expected = {(r["instance"], r["_expected_kind"], r["_mono"]) for r in results
                    if r["_expected_kind"]}

        # last (demo/operations.py): a planned delete, then the agent stops
        victim = gs[-1]
        planned = await planned_delete(
            stack.controller, victim.uuid, "demo-compute", victim.channel.cut,
            lambda t0: _wait_fault(obs, victim.uuid, "channel_lost", t0, timeout=10),
            lambda t0: any(r.body.get("instance_uuid") == victim.uuid and r.mono >= t0
                           for r in sink.received))
        expected.add((victim.uuid, "channel_lost", planned.pop("_mono")))
        compute, stack.compute = stack.compute, None   # stopped here, not again below
        silence = await agent_silence(stack.controller, compute.stop, "demo-compute")

        false_alarms = 0
        for u, k, mono in obs.faults:
            if not any(u == eu and k == ek and mono >= em for eu, ek, em in expected):
                false_alarms += 1
        sg_ok = (all(not b["not_delivered"] for b in group.broadcasts)
                 and all(len(f["seen_by"]) == guests - 1 for f in peer_failures)
                 and len(status) == guests)
        votes_ok = all(v["result"] == v["expected"] for v in votes)
        ok = all(r["_verdict"] == "ok" for r in results) and false_alarms == 0 and sg_ok \
            and votes_ok and planned["ok"] and silence["ok"]
        detects = [r["detect_ms"] for r in results if r["detect_ms"] is not None]
        reports = [r["report_ms"] for r in results if r["report_ms"] is not None]
        doc = {"interval_ms": interval_ms,
               "faults": [{k: v for k, v in r.items() if not k.startswith("_")}
                          for r in results],
               "false_alarms": false_alarms,
               "votes": votes,
               "planned_operation": planned,
               "compute_silence": silence,
               "server_group": {
                   "id": "demo", "members": [g.uuid for g in gs],
                   "broadcasts": [{k: v for k, v in b.items() if k != "data"}
                                  for b in group.broadcasts],
                   "peer_failures": peer_failures,
                   "notifications": group.notifications_json(lambda m: _iso(m, anchor)),
                   "status": status}}
        if as_json:
            print(json.dumps(doc, indent=2))
        else:
            say("")
            if detects:
                say(f"detection: median {statistics.median(detects):.1f} ms, "
                    f"p99 {_pct(detects, 0.99):.1f} ms (SAL1 needs < 1000 ms)")
            if reports:
                say(f"detection -> sink: median {statistics.median(reports):.1f} ms, "
                    f"p99 {_pct(reports, 0.99):.1f} ms")
            say(f"false alarms: {false_alarms}")
            for f in peer_failures:
                ms = list(f["since_detection_ms"].values())
                say(f"server group: hang of {f['instance'][:8]} seen as a notification by "
                    f"{len(f['seen_by'])}/{guests - 1} peers, "
                    f"{max(ms, default=0):.1f} ms after detection at most")
            for v in votes:
                say(f"vote: {v['action']} asked of {v['instance'][:8]} -> {v['result']} "
                    f"(proceed {str(v['proceed']).lower()}"
                    f"{', ' + repr(v['log_msg']) if v['log_msg'] else ''}) in "
                    f"{v['latency_ms']:.1f} ms")
            why = "; ".join(sorted(set(planned["deliveries"].values()))) or "no verdict"
            say(f"planned: Nova deletes {victim.uuid[:8]} (instance.delete.start, then its "
                f"channel closes): channel_lost detected in {planned['detect_ms'] or 0:.1f} ms, "
                f"stored, {'reported (FAILED)' if planned['reported'] else 'not reported'} "
                f"({why})")
            flagged = "never" if silence["flagged_ms"] is None \
                else f"{silence['flagged_ms']:.0f} ms later"
            say(f"compute agent stopped without a word: host demo-compute flagged silent "
                f"{flagged} (agent_down_after_s "
                f"{silence['agent_down_after_s']})")
            say(f"server group status (query from {gs[0].uuid[:8]}):")
            for m in status:
                say(f"  {m.get('instance_id') or '-':36} host {m.get('host')} "
                    f"heartbeat {m.get('heartbeat')}")
            say("result: " + ("every expected alarm raised, no other alarm; server group "
                              "broadcasts, peer failure notifications and status complete; "
                              "votes answered by the guest; a planned delete raised no "
                              "alarm; a stopped compute agent was flagged"
                              if ok else "FAILED (see above)"))
        return 0 if ok else 1
    finally:
        # The compute agent goes first: closing channels under it would be
        # (correctly) reported as channel_lost.
        if stack is not None:
            await stack.stop()
        if group is not None:
            await group.close()
        for g in gs:
            if g.proc is not None and g.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    g.proc.send_signal(signal.SIGCONT)
                    g.proc.kill()
                await g.proc.wait()
            await g.channel.close()
        await sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _inject(label: str, kind: str | None, g: Guest, obs: Observed, sink: WebhookSink,
                  interval_ms: int, anchor: tuple[float, datetime]) -> dict[str, Any]:
    assert g.proc is not None
    t0 = time.monotonic()
    if label == "hang":
        g.proc.send_signal(signal.SIGSTOP)
    elif label == "unhealthy":
        g.health_file.unlink()
    elif label == "channel_cut":
        await g.channel.cut()
    elif label == "clean_exit":
        g.proc.send_signal(signal.SIGTERM)
    elif label == "restart":
        g.proc.send_signal(signal.SIGTERM)
        await g.proc.wait()
        await _start_guest(g, interval_ms)
    detected = reported = None
    verdict = "ok"
    if kind is not None:
        detected = await _wait_fault(obs, g.uuid, kind, t0, timeout=10)
        if detected is None:
            verdict = "MISSED"
        else:
            rec = await sink.wait_for(g.uuid, kind, after=detected, timeout=10)
            reported = rec.mono if rec else None
            if rec is None:
                verdict = "NOT REPORTED"
    else:
        want = "disabled" if label == "clean_exit" else "enabled"
        if label == "restart":
            # Registered again: disabled by the exit, then enabled by the new init.
            await _wait_state(obs, g.uuid, "disabled", 5)
        if not await _wait_state(obs, g.uuid, want, 10):
            verdict = f"NOT {want.upper()}"
        # Quiet period: long enough for a false heartbeat_loss to show.
        await asyncio.sleep(4 * interval_ms / 1000 + 0.3)
    return {"instance": g.uuid, "kind": label, "expect_alarm": kind is not None,
            "injected_at": _iso(t0, anchor), "detected_at": _iso(detected, anchor),
            "reported_at": _iso(reported, anchor),
            "detect_ms": None if detected is None else round((detected - t0) * 1000, 3),
            "report_ms": None if detected is None or reported is None
            else round((reported - detected) * 1000, 3),
            "_verdict": verdict, "_expected_kind": kind, "_mono": t0}


async def _repair(label: str, g: Guest, obs: Observed, interval_ms: int) -> None:
    """Puts the guest back so a next round can fault it again."""
    assert g.proc is not None
    if label == "hang":
        g.proc.send_signal(signal.SIGCONT)
    elif label == "unhealthy":
        g.health_file.touch()
    elif label == "channel_cut":
        await g.channel.listen()
    elif label == "clean_exit":
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(g.proc.wait(), 5)
        await _start_guest(g, interval_ms)
    else:
        return
    await _wait_state(obs, g.uuid, "enabled", 10)
