"""Verdicts on synthetic records: each check can say no, and says why with numbers."""
from __future__ import annotations

import json
import subprocess
import sys

from nfvha.verify import metrics, model, report, runner, sal, verdicts
from nfvha.verify.timeline import Record, Sample

SAL1 = sal.get("SAL1")


def aa_record(*, detected=0.15, back=0.9, serving=0.6, routed_last=0.1, fail_after=(),
              restarted=0.4, cm="Pacemaker") -> Record:
    r = Record("active-active", 0.0)
    for i in range(600):                      # 5 ms samples, round robin s1..s3
        t = i * 0.005 - 1.0
        ok = not any(abs(t - f) < 1e-9 for f in fail_after)
        r.add(Sample(t, ok, 1.0, "http", f"s{i % 3 + 1}" if ok else "HTTP 503"))
    r.mark("fault", 0.0, "kill -9")
    if detected is not None:
        r.mark("detected", detected, "HAProxy stats: s2 UP 1/2 -> DOWN")
        r.mark("alarm", detected, "Server be/s2 is DOWN")
    if restarted is not None:
        r.mark("instance_restarted", restarted, "Pacemaker alert: s2 start rc=0")
    r.mark("cm_detected", 0.05, "Pacemaker alert: s2 monitor rc=1")
    if serving is not None:
        r.mark("instance_serving", serving, "s2 port")
    if back is not None:
        r.mark("instance_back", back, "HAProxy stats: s2 DOWN 1/2 -> UP")
    r.facts.update({"instances": ["s1", "s2", "s3"], "victim": "s2", "cluster_manager": cm,
                    "cluster_monitor": "monitor every 100 ms", "stats_max_gap_ms": 10.0,
                    "victim_last_routed": routed_last, "victim_routed_after_fault": 7,
                    "health_check": "inter 100 fall 2 rise 2"})
    r.ended = 2.0
    return r


def judge(r: Record):
    m = metrics.measure(r)
    return {v.id: v for v in verdicts.judge(model.load(), "active-active", r, m, SAL1)}, m


def test_a_healthy_run_passes_everything_and_cites_numbers():
    v, m = judge(aa_record())
    assert all(x.verdict == "pass" for x in v.values()), v
    assert "150 ms" in v["Req 5.4.2"].why
    assert "200 baseline requests" in v["Req 5.4.1"].why
    assert "s1 67, s2 67, s3 66" in v["Req 5.4.1"].why
    assert "900 ms" in v["Req 5.4.5"].why and m.recovery_ms == 900


def test_late_detection_fails_the_health_check_requirement():
    v, _ = judge(aa_record(detected=1.2, routed_last=1.1))
    assert v["Req 5.4.2"].verdict == "fail" and "1200 ms" in v["Req 5.4.2"].why
    assert v["Req 5.4.4"].verdict == "fail"          # alarm too late for SAL1
    r = aa_record(detected=1.2, routed_last=1.1)
    v2 = {x.id: x for x in verdicts.judge(model.load(), "active-active", r,
                                          metrics.measure(r), sal.get("SAL2"))}
    assert v2["Req 5.4.2"].verdict == "pass"          # within SAL2's 5 s


def test_isolation_fails_when_requests_reach_the_instance_after_detection():
    v, _ = judge(aa_record(routed_last=0.5))
    assert v["Req 5.4.3"].verdict == "fail" and "still got requests until 500 ms" in \
        v["Req 5.4.3"].why


def test_isolation_fails_when_readmitted_before_it_serves():
    v, _ = judge(aa_record(back=0.5, serving=0.6))
    assert v["Req 5.4.3"].verdict == "fail" and "before it served again" in v["Req 5.4.3"].why


def test_isolation_fails_when_clients_fail_after_detection():
    v, _ = judge(aa_record(fail_after=(0.3, 0.305)))
    assert v["Req 5.4.3"].verdict == "fail" and "2 client requests failed" in v["Req 5.4.3"].why


def test_no_balancing_when_an_instance_gets_nothing():
    r = aa_record()
    r.samples = [Sample(s.t, s.ok, s.latency_ms, s.probe, "s1") for s in r.samples]
    v, _ = judge(r)
    assert v["Req 5.4.1"].verdict == "fail" and "s2, s3 got no request" in v["Req 5.4.1"].why


def test_the_stand_in_supervisor_is_not_a_cluster_manager():
    v, _ = judge(aa_record(cm="nfvha-supervisor"))
    assert v["Req 5.4.5"].verdict == "fail" and v["Req 5.4.5"].why.startswith(
        "fail: no cluster manager")


def test_instance_never_back_fails_recovery():
    v, m = judge(aa_record(back=None, serving=None, restarted=None))
    assert m.recovery_ms is None
    assert v["Req 5.4.5"].verdict == "fail" and v["Req 5.4.3"].verdict == "fail"


def test_report_renders_from_a_synthetic_run(tmp_path):
    r = aa_record(fail_after=(0.3,))
    res = runner.result("active-active", "active-active", r, metrics.measure(r), SAL1,
                        model.load())
    doc = runner.full_report([res], SAL1)
    j, h = report.write(doc, str(tmp_path))
    assert json.load(open(j))["scenarios"][0]["requirements"][0]["id"] == "Req 5.4.1"
    page = open(h).read()
    assert page.count('class="req failed"') == 1           # one red tick on the timeline
    assert 'class="mark detected"' in page and 'class="mark fault"' in page
    text = report.visible_text(page)
    assert "SAL reached by the measured times: SAL1 (target SAL1)" in text
    assert "Req 5.4.3" in text and "FAIL" in text


def test_cli_rejects_unknown_things_with_clear_errors():
    def run(*a):
        return subprocess.run([sys.executable, "-m", "nfvha.cli.main", "verify", *a],
                              capture_output=True, text=True, timeout=60)
    p = run("run", "active-active", "--sal", "SAL9")
    assert p.returncode == 2 and "unknown SAL" in p.stderr
    p = run("run", "no-such-scenario")
    assert p.returncode == 2 and "unknown scenario" in p.stderr


def test_model_rejects_unreadable_results_and_ignores_junk_entries(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    p = subprocess.run([sys.executable, "-m", "nfvha.cli.main", "verify", "model", "--format",
                        "dot", "--results", str(bad), "-o", str(tmp_path / "k.dot")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "cannot read results" in p.stderr
    assert runner.latest_verdicts({"scenarios": [{"requirements": [
        {"id": "Req 5.4.1", "verdict": "pass"}, {"id": "Req 5.4.2", "verdict": "<script>"},
        "junk", {"id": "SLA max_outage_time", "verdict": "fail"}]}, 5]}) == {
        "Req 5.4.1": "pass"}


async def test_a_missing_deployment_is_not_yet_available(monkeypatch):
    monkeypatch.setitem(sys.modules, "nfvha.verify.deploy.keepalived", None)
    try:
        await runner.run_one("active-passive", SAL1)
    except runner.NotAvailable as exc:
        assert "not yet available" in str(exc) and "keepalived.py" in str(exc)
    else:
        raise AssertionError("expected NotAvailable")
