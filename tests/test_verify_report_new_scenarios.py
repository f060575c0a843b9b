"""The HTML report of load-balancer, broker, cluster-manager and keystone runs.

Each scenario's result is built from a constructed record (the events and
facts its run writes, samples with a short outage) judged by the
scenario's own judge, so the document is what `--report-dir` writes for
it. The page must carry, per scenario, its section, figures, timeline
with its marks, one row per requirement with the verdict's colour class,
and the KAOS diagram with each requirement filled in its latest verdict's
colour.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional, Tuple

import pytest

from nfvha.verify import kaos
from nfvha.verify import sal as sal_mod
from nfvha.verify.metrics import measure
from nfvha.verify.model import load
from nfvha.verify.report import render_html, visible_text
from nfvha.verify.results import ScenarioResult, result
from nfvha.verify.runner import full_report, latest_verdicts
from nfvha.verify.timeline import Record, Sample
from nfvha.verify.yardstick import Case, sla_verdicts
from tests.conftest import require_command

SAL1 = sal_mod.get("SAL1")
T0 = 1000.0                                 # the fault, monotonic seconds

Events = List[Tuple[float, str, str]]       # (ms since the fault, kind, detail)


def _record(name: str, events: Events, facts: Dict[str, object], *, probe: str = "http",
            served: Tuple[str, ...] = ("s1", "s2", "s3"), fail: Tuple[float, float] = (20, 80),
            detail_for=None) -> Record:
    """Samples every 10 ms from -1 s to +3 s, failed inside `fail` (ms)."""
    r = Record(name, T0 - 2.0)
    for i in range(400):
        ms = -1000 + 10 * i
        ok = not fail[0] <= ms <= fail[1]
        who = served[i % len(served)] if detail_for is None else detail_for(ms, i)
        r.add(Sample(T0 + ms / 1000, ok, 3.0 if ok else 0.5, probe, who if ok else "refused"))
    for ms, kind, detail in events:
        r.mark(kind, T0 + ms / 1000, detail)
    r.facts.update(facts)
    r.facts["main_probe"] = probe
    r.ended = T0 + 3.0
    return r


def _scenario(name: str, r: Record, judge, probe: str = "http",
              lost: Optional[int] = None) -> ScenarioResult:
    m = measure(r, probe=probe)
    if lost is not None:                    # the broker counts lost messages (broker.run)
        m = dataclasses.replace(m, lost=lost)
    return ScenarioResult(name, r, m, judge(load(), r, m, SAL1),
                          sal_mod.reached(m.detection_ms, m.recovery_ms))


def load_balancer() -> ScenarioResult:
    from nfvha.verify.scenarios import load_balancer as lb
    r = _record("load-balancer", [
        (0, "fault", "kill -9 pid 4242 on local"),
        (3, "detected", "keepalived on node a: FAULT"),
        (3, "alarm", "keepalived notify: node a FAULT"),
        (60, "backup_master", "node b MASTER"),
        (62, "failover", "VIP now on node b"),
        (110, "cm_detected", "Pacemaker alert: haproxy-a monitor rc=7"),
        (400, "instance_restarted", "Pacemaker alert: haproxy-a start rc=0"),
        (800, "instance_back", "node a is the new BACKUP"),
    ], {"master": "a", "backup": "b", "victim": "HAProxy on node a",
        "cluster_manager": "Pacemaker", "cluster_monitor": "monitor every 100 ms"},
        detail_for=lambda ms, i: f"api-{'ab'[i % 2]} via lb node-{'a' if ms < 0 else 'b'}")
    return _scenario("load-balancer", r, lb.judge)


def broker(quorum: bool = True) -> ScenarioResult:
    from nfvha.verify.scenarios import broker as b
    events: Events = [(0, "fault", "kill -9 pid 777 on local"),
                      (15, "detected", "node r2: rabbit on node 'r1' down"),
                      (100, "cm_detected", "Pacemaker alert: rabbit-r1 monitor rc=7"),
                      (100, "alarm", "Pacemaker alert (failed action)"),
                      (900, "instance_restarted", "Pacemaker alert: rabbit-r1 start rc=0"),
                      (2500, "instance_back", "node r1 rejoined the cluster (seen by r2)")]
    if quorum:
        events.append((200, "failover", "new leader on node r2: queue q candidate -> leader"))
    lost = 0 if quorum else 412
    r = _record("broker" if quorum else "broker-classic", events, {
        "victim": "node r1", "queue_type": "quorum" if quorum else "classic",
        "cluster_manager": "Pacemaker", "cluster_monitor": "monitor every 100 ms",
        "published": 1500, "consumed": 1500 - lost, "lost_messages": lost,
        "lost_examples": [], "duplicates": 0, "redelivered": 3, "republished": 4,
        "per_consumer": {"consumer-1": 500, "consumer-2": 500, "consumer-3": 500 - lost}},
        probe="publish", served=("producer-1 via r1", "producer-2 via r2"))
    return _scenario(r.scenario, r, b.judge, probe="publish", lost=lost)


def cluster_manager() -> ScenarioResult:
    from nfvha.verify.scenarios import cluster_manager as cm
    r = _record("cluster-manager", [
        (0, "fault", "kill -9 pid 99 on node-1"),
        (2900, "detected", "node-2: new membership [2, 3], Members left: 1"),
        (2950, "fenced", "Pacemaker alert on node-2: node 1 fenced"),
        (2950, "alarm", "Pacemaker fencing alert on node-2"),
        (2960, "instance_restarted", "web started on node-2"),
        (2990, "instance_back", "clients served by node-2"),
    ], {"instances": ["node-1", "node-2", "node-3"], "resource_located": ["node-2"],
        "copies_running": 1, "old_copy_alive": False}, fail=(2000, 2980),
        served=("node-1",))
    return _scenario("cluster-manager", r, cm.judge)


def keystone(checks: bool = True, name: Optional[str] = None) -> ScenarioResult:
    events: Events = [(0, "fault", "kill -9 pid 500 and its descendants 501 on local"),
                      (100, "cm_detected", "Pacemaker alert: s2 monitor rc=1"),
                      (1500, "instance_restarted", "Pacemaker alert: s2 start rc=0"),
                      (2500, "instance_serving", "s2 port 5000: {\"version\": ...")]
    if checks:
        events += [(190, "alarm", "Server be/s2 is DOWN, reason: Layer4 connection problem"),
                   (197, "detected", "HAProxy stats: s2 UP 1/2 -> DOWN"),
                   (2700, "instance_back", "HAProxy stats: s2 DOWN 1/2 -> UP")]
    else:
        events.append((2500, "instance_back", "s2 serving again (no health check)"))
    r = _record(name or ("keystone" if checks else "keystone-nohealth"), events, {
        "instances": ["s1", "s2", "s3"], "victim": "s2", "checks": checks,
        "health_check": "inter 100 fall 2 rise 2" if checks else "none",
        "cluster_manager": "Pacemaker", "cluster_monitor": "monitor every 100 ms",
        "victim_routed_after_fault": 0 if checks else 5, "retries_after_fault": 0,
        "redispatches_after_fault": 0 if checks else 5, "stats_max_gap_ms": 12.0},
        fail=(0, 0) if checks else (1600, 1700))
    m = measure(r)
    return result(r.scenario, "active-active", r, m, SAL1, load())


def _section(page: str, name: str) -> str:
    start = page.index(f'<section class="scenario" id="sc-{name}">')
    return page[start:page.index("</section>", start)]


def _kaos_fill(page: str) -> Dict[str, str]:
    """Requirement id → the fill colour of its node in the inline KAOS SVG."""
    kaos_part = page[page.index('<div class="kaos">'):]
    return dict(re.findall(r'<title>(Req 5\.4\.\d+)</title>(?:\s*<g [^>]*><a [^>]*>)?\s*'
                           r'<polygon fill="(#[0-9a-f]{6})"', kaos_part))


@pytest.fixture(scope="module")
def runs() -> List[ScenarioResult]:
    return [load_balancer(), broker(), broker(quorum=False), cluster_manager(), keystone(),
            keystone(checks=False)]


def test_each_new_scenario_has_its_section_figures_timeline_and_requirement_rows(runs):
    doc = full_report(runs, SAL1)
    page = render_html(doc)
    for res, sc in zip(runs, doc["scenarios"]):
        part = _section(page, res.name)
        text = visible_text(part)
        assert f"Scenario {res.name}" in text
        assert part.count('class="timeline"') == 1
        assert 'class="mark fault"' in part and 'class="req failed"' in part
        rows = re.findall(r'<tr class="req-row (pass|fail)"><td>([^<]+)</td>', part)
        assert rows == [(v.verdict, v.id) for v in res.verdicts + res.extra_verdicts]
        for v in res.verdicts:
            assert (f'<td class="verdict {v.verdict}">{v.verdict.upper()}</td>') in part
            assert model_text(v.id) in text
        assert sc["lost"] == res.measurement.lost
    # the scenario's own marks on its timeline
    assert 'class="mark failover"' in _section(page, "load-balancer")
    assert 'class="mark failover"' in _section(page, "broker")
    assert 'class="mark failover"' not in _section(page, "broker-classic")
    assert 'class="mark fenced"' in _section(page, "cluster-manager")
    assert 'class="mark detected"' in _section(page, "keystone")
    assert 'class="mark detected"' not in _section(page, "keystone-nohealth")
    # a broker loses messages, not requests
    assert '<td class="lost">412 messages</td>' in _section(page, "broker-classic")
    assert '<td class="lost">1 requests</td>' in _section(page, "keystone")


def model_text(rid: str) -> str:
    return load().requirements[rid].text


def test_the_broken_variants_show_their_failed_requirements_in_red(runs):
    v = {r.name: {x.id: x.verdict for x in r.verdicts} for r in runs}
    # what each constructed run must be judged (else the colours prove nothing)
    assert set(v["load-balancer"].values()) == {"pass"}
    assert v["broker"]["Req 5.4.6"] == v["broker"]["Req 5.4.10"] == "pass"
    assert v["broker-classic"]["Req 5.4.6"] == v["broker-classic"]["Req 5.4.10"] == "fail"
    assert v["cluster-manager"]["Req 5.4.6"] == "pass"
    assert v["keystone"] == {f"Req 5.4.{i}": "pass" for i in range(1, 6)}
    assert {k for k, x in v["keystone-nohealth"].items() if x == "fail"} == \
        {"Req 5.4.2", "Req 5.4.3", "Req 5.4.4"}
    page = render_html(full_report(runs, SAL1))
    for name, rids in (("broker-classic", ("Req 5.4.6", "Req 5.4.10")),
                       ("keystone-nohealth", ("Req 5.4.2", "Req 5.4.3", "Req 5.4.4"))):
        part = _section(page, name)
        for rid in rids:
            assert re.search(rf'<tr class="req-row fail"><td>{re.escape(rid)}</td>.*?'
                             r'<td class="verdict fail">FAIL</td>', part), (name, rid)


def test_kaos_diagram_is_coloured_by_each_requirements_latest_verdict(runs):
    require_command("dot")
    for order in (runs, [keystone(checks=False), keystone()]):
        doc = full_report(order, SAL1)
        latest = latest_verdicts(doc)
        fills = _kaos_fill(render_html(doc))
        assert len(fills) == 12                     # every requirement drawn
        for rid, colour in fills.items():
            assert colour == kaos.COLOURS[latest.get(rid)], (rid, colour, latest.get(rid))
    # keystone after keystone-nohealth: 5.4.2 green; the other way round: red
    assert _kaos_fill(render_html(full_report([keystone(checks=False), keystone()], SAL1))
                      )["Req 5.4.2"] == kaos.COLOURS["pass"]
    assert _kaos_fill(render_html(full_report([keystone(), keystone(checks=False)], SAL1))
                      )["Req 5.4.2"] == kaos.COLOURS["fail"]


def test_tc046_run_shows_yardsticks_sla_rows_beside_the_requirements():
    res = keystone(name="tc046")
    case = Case("tc046", "keystone", 2, "kill-process", "keystone",
                max_outage_ms=5000.0, max_recover_ms=30000.0)
    res.extra_verdicts = sla_verdicts(case, res.measurement.outage_ms,
                                      res.measurement.recovery_ms, 1500.0)
    part = _section(render_html(full_report([res], SAL1)), "tc046")
    text = visible_text(part)
    assert "SLA max_outage_time PASS" in text and "vs Yardstick SLA 5000 ms" in text
    assert "SLA max_recover_time PASS" in text and "process running again at 1500 ms" in text
