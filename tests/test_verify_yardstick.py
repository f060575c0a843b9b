"""Yardstick HA test case YAML (tc019 style) accepted as input."""
from __future__ import annotations

from importlib import resources

import pytest

from nfvha.verify import yardstick


def shipped() -> str:
    return resources.files("nfvha.verify").joinpath("data/tc019_active_active.yaml").read_text()


def test_shipped_tc019_case_maps_onto_the_engine():
    c = yardstick.parse(shipped(), "tc019")
    assert c.fault_type == "kill-process" and c.process_name == "nova-api"
    assert c.deployment == "active-active" and c.victim == 2
    assert c.max_outage_ms == 5000 and c.max_recover_ms == 30000
    assert [m["monitor_type"] for m in c.monitors] == ["openstack-cmd", "process"]


def test_sla_verdicts_judge_the_measured_numbers():
    c = yardstick.parse(shipped())
    ok = yardstick.sla_verdicts(c, outage_ms=120.0, recovery_ms=1500.0)
    assert [(v.id, v.verdict) for v in ok] == [("SLA max_outage_time", "pass"),
                                               ("SLA max_recover_time", "pass")]
    bad = yardstick.sla_verdicts(c, outage_ms=5001.0, recovery_ms=None)
    assert [v.verdict for v in bad] == ["fail", "fail"]
    assert "5001 ms" in bad[0].why and "n/a" in bad[1].why


def test_top_level_sla_outage_time_is_used_when_monitors_have_none():
    text = shipped().replace("max_outage_time: 5", "max_outage_x: 5")
    assert yardstick.parse(text).max_outage_ms == 5000     # from scenarios[0].sla.outage_time


@pytest.mark.parametrize("mutation,match", [
    (("kill-process", "bare-metal-down"), "not supported"),
    (("type: ServiceHA", "type: Ping"), "only ServiceHA"),
])
def test_unsupported_cases_are_clear_errors(mutation, match):
    with pytest.raises(ValueError, match=match):
        yardstick.parse(shipped().replace(*mutation))


def test_not_a_task_is_rejected():
    with pytest.raises(ValueError, match="not a Yardstick task"):
        yardstick.parse("just: text\n")


@pytest.mark.parametrize("text", ["- a\n- b\n", "scenarios: 3\n", "scenarios: [3]\n",
                                  "scenarios:\n- type: ServiceHA\n  options: [1]\n",
                                  "scenarios: [{type: ServiceHA, options: {attackers: [7]}}]\n",
                                  ": : :\n", "\x00\xff"])
def test_malformed_tasks_are_value_errors_never_crashes(text):
    with pytest.raises(ValueError):
        yardstick.parse(text)
