"""`nfvha demo --json`: every expected alarm raised, no other alarm, in budget;
a planned delete raises none; a stopped compute agent is flagged; the server
group: broadcasts reach every peer, a hung member is a notification to the
others, the status query lists every member."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from nfvha.protocol.guest import GuestConfig

pytestmark = pytest.mark.slow


def test_demo_json_raises_every_expected_alarm_and_no_other() -> None:
    proc = subprocess.run([sys.executable, "-m", "nfvha.cli.main", "demo", "--json"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["false_alarms"] == 0
    assert doc["interval_ms"] == GuestConfig.interval_ms  # the guest agent's default
    kinds = {f["kind"] for f in doc["faults"]}
    assert kinds == {"hang", "unhealthy", "channel_cut", "clean_exit", "restart"}
    for f in doc["faults"]:
        assert set(f) >= {"instance", "kind", "expect_alarm", "injected_at", "detected_at",
                          "reported_at", "detect_ms", "report_ms"}
        datetime.fromisoformat(f["injected_at"])
        assert "." in f["injected_at"] and f["injected_at"].endswith("+00:00")
        if f["expect_alarm"]:
            assert f["detected_at"] is not None and f["reported_at"] is not None, f
            # SAL1 budget; the figures themselves come from `make demo`/`make bench`.
            assert 0 <= f["detect_ms"] < 1000, f
            assert 0 <= f["report_ms"] < 1000, f
        else:
            assert f["detected_at"] is None and f["detect_ms"] is None, f

    # the guest's event script decides: it refuses a live migration, accepts a stop
    assert [(v["action"], v["result"], v["proceed"]) for v in doc["votes"]] == [
        ("live_migrate_begin", "reject", False), ("stop", "accept", True)]

    # a planned delete: detected at the compute, stored, told to no sink
    planned = doc["planned_operation"]
    assert planned["ok"] and planned["stored"] and not planned["reported"], planned
    assert planned["deliveries"] and all(v.startswith("suppressed: Nova operation delete")
                                         for v in planned["deliveries"].values())
    # the compute agent stopped: flagged once its allowance (1 s since its
    # last report) ran out, not before
    silence = doc["compute_silence"]
    assert silence["ok"] and silence["agent_down_after_s"] == 1.0
    assert silence["quiet_ms"] >= 1000 and silence["flagged_ms"] < 3000, silence

    sg = doc["server_group"]
    members = set(sg["members"])
    assert len(members) == 5
    assert {b["from"] for b in sg["broadcasts"]} == members
    for b in sg["broadcasts"]:
        assert set(b["delivered_to"]) == members - {b["from"]}, b
        assert set(b["latency_ms"]) == set(b["delivered_to"])
        assert all(0 <= v < 1000 for v in b["latency_ms"].values()), b
    hung = {f["instance"] for f in doc["faults"] if f["kind"] == "hang"}
    assert {p["instance"] for p in sg["peer_failures"]} == hung
    for p in sg["peer_failures"]:
        assert set(p["seen_by"]) == members - {p["instance"]}, p
    for about in hung:
        told = {n["to"] for n in sg["notifications"]
                if n["about"] == about and n["heartbeat"] == "failed"}
        assert told == members - {about}
    assert all(n["to"] != n["about"] for n in sg["notifications"])  # never about itself
    assert [m["instance_id"] for m in sg["status"]][0] == sg["members"][0]
    assert {m["instance_id"] for m in sg["status"]} == members
    assert all(m["host"] == "demo-compute" for m in sg["status"])
