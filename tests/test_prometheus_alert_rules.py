"""etc/prometheus/nfvha-alerts.yml: valid rules (promtool check), alerts
that fire and stay quiet as their unit tests say (promtool test), and only
metrics a controller really exports (a renamed metric fails here)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import require_command

from nfvha.controller.metrics import ControllerMetrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "etc" / "prometheus" / "nfvha-alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "nfvha-alerts.test.yml"


def _promtool(*args: str) -> str:
    require_command("promtool")
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_rules_file_is_valid() -> None:
    assert "SUCCESS: 10 rules found" in _promtool("check", "rules", str(RULES))


def test_each_alert_fires_and_stays_quiet_as_its_unit_test_says() -> None:
    assert "SUCCESS" in _promtool("test", "rules", str(RULE_TESTS))


def _exported_names() -> set[str]:
    names = set()
    for family in ControllerMetrics().registry.collect():
        suffixes = {"counter": ["_total"], "gauge": [""],
                    "histogram": ["_bucket", "_sum", "_count"]}[family.type]
        names.update(family.name + s for s in suffixes)
    return names


def test_the_rules_use_only_metrics_a_controller_exports() -> None:
    used = set(re.findall(r"\bnfvha_[a-z_]+", RULES.read_text()))
    assert used, "no nfvha metric in the rules"
    assert used <= _exported_names(), used - _exported_names()


def test_every_rule_has_a_unit_test() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert alerts == tested, alerts ^ tested


async def test_a_controllers_series_exist_at_zero_before_the_first_event(tmp_path: Path) -> None:
    """A counter whose series appears already at 1 is invisible to
    increase(): the first fault a sink rejects would raise no alert."""
    from prometheus_client import generate_latest

    from nfvha.controller.reporters.log import LogReporter
    from nfvha.controller.service import Controller

    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [LogReporter()])
    text = generate_latest(c.metrics.registry).decode()
    for line in ('nfvha_delivery_failures_total{final="true",sink="log"} 0.0',
                 'nfvha_delivery_failures_total{final="false",sink="log"} 0.0',
                 'nfvha_deliveries_pending{sink="log"} 0.0',
                 'nfvha_faults_received_total{kind="heartbeat_loss"} 0.0',
                 'nfvha_reports_invalid_total{method="alive"} 0.0'):
        assert line in text, line
