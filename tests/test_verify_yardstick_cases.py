"""Yardstick's own HA cases (tc045–tc049, tc053, tc056, tc057) as published:
read as written, mapped to what runs here, or refused with the reason."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from importlib import resources

import pytest

from nfvha.verify import sal as sal_mod
from nfvha.verify import yardstick
from nfvha.verify.model import load
from nfvha.verify.runner import NotAvailable

CASES = ("tc045", "tc046", "tc047", "tc048", "tc049", "tc053", "tc056", "tc057")


def path(tc: str) -> str:
    return str(resources.files("nfvha.verify").joinpath(f"data/yardstick/{tc}.yaml"))


def read(tc: str) -> yardstick.YardstickCase:
    with open(path(tc)) as f:
        return yardstick.read(f.read(), tc)


def test_every_published_case_reads_with_its_attacker_monitors_and_sla():
    procs = {tc: read(tc).process for tc in CASES}
    assert procs == {"tc045": "neutron-server", "tc046": "keystone", "tc047": "glance-api",
                     "tc048": "cinder-api", "tc049": "swift-proxy", "tc053": "haproxy",
                     "tc056": "rabbitmq-server", "tc057": "corosync"}
    tc056 = read("tc056")
    cmds = [m.command for m in tc056.monitors if m.type == "openstack-cmd"]
    assert cmds == ["openstack image list", "openstack network list", "openstack volume list",
                    "openstack stack list"]
    assert all(m.sla == {"max_outage_time": 5.0} for m in tc056.monitors[:4])
    assert tc056.monitors[-1].sla == {"max_recover_time": 30.0}
    tc057 = read("tc057")
    assert tc057.type == "GeneralHA" and tc057.fault_type == "general-attacker"
    assert tc057.attack_key == "kill-corosync" and len(tc057.checkers) == 2
    assert [s.split()[-1] for s in read("tc053").steps] == ["kill-process", "service-status",
                                                           "list-images"]


def test_what_runs_here_and_what_cannot_says_why():
    runs = {tc: yardstick.where(read(tc)) for tc in CASES}
    assert runs["tc053"][0] == "load-balancer" and runs["tc056"][0] == "broker"
    assert runs["tc057"][0] == "cluster-manager" and "not run" in runs["tc057"][1]
    assert runs["tc046"][0] == "keystone" and "real Keystone" in runs["tc046"][1]
    for tc in ("tc045", "tc047", "tc048", "tc049"):
        dep, why = runs[tc]
        assert dep is None and read(tc).process.split("-")[0] in why.lower(), (tc, why)


def test_runnable_cases_parse_into_the_middleware_scenarios():
    with open(path("tc053")) as f:
        c = yardstick.parse(f.read(), "tc053")          # GeneralHA
    assert (c.deployment, c.fault_type, c.process_name) == ("load-balancer", "kill-process",
                                                            "haproxy")
    assert c.max_outage_ms == 5000 and c.max_recover_ms == 30000
    with open(path("tc056")) as f:
        c = yardstick.parse(f.read(), "tc056")
    assert c.deployment == "broker" and c.max_outage_ms == 5000
    with open(path("tc057")) as f:
        c = yardstick.parse(f.read(), "tc057")          # general-attacker kill-corosync
    assert (c.deployment, c.process_name) == ("cluster-manager", "corosync")
    assert c.max_outage_ms == 5000 and c.max_recover_ms is None
    with open(path("tc046")) as f:
        c = yardstick.parse(f.read(), "tc046")          # ServiceHA, kill-process keystone
    assert (c.deployment, c.fault_type, c.process_name) == ("keystone", "kill-process",
                                                            "keystone")
    assert c.max_outage_ms == 5000 and c.max_recover_ms == 30000
    stop = open(path("tc056")).read().replace('"kill-process"', '"stop-service"')
    with pytest.raises(ValueError, match="not supported"):   # our broker fault is kill -9
        yardstick.parse(stop)


def test_a_case_that_cannot_run_is_refused_before_anything_starts():
    with pytest.raises(NotAvailable, match="neutron-server is not installed"):
        asyncio.run(yardstick.run_case(path("tc045"), sal_mod.get("SAL1"), load()))


def test_cli_exit_3_and_the_table():
    p = subprocess.run([sys.executable, "-m", "nfvha.cli.main", "verify", "run", path("tc048")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and "cinder-api is not installed" in p.stderr, p.stderr
    t = subprocess.run([sys.executable, "-m", "nfvha.verify.yardstick",
                        *[path(tc) for tc in CASES]], capture_output=True, text=True, timeout=60)
    assert t.returncode == 0
    assert t.stdout.count("cannot run here") == 4 and t.stdout.count("runs here as") == 4
    assert "check-rabbitmq-master" in t.stdout and "not run here" in t.stdout


def test_keystone_without_its_venv_exits_3_with_the_reason_before_anything_starts(tmp_path):
    env = {**os.environ, "NFVHA_OPENSTACK_VENV": str(tmp_path / "none")}
    for target in (path("tc046"), "keystone-nohealth"):
        p = subprocess.run([sys.executable, "-m", "nfvha.cli.main", "verify", "run", target],
                           capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 3, p.stderr
        assert "Keystone is not installed" in p.stderr
        assert "scripts/install-openstack.sh" in p.stderr
