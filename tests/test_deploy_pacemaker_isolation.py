"""Two private Pacemaker clusters side by side never see each other, and stop()
leaves nothing behind (corosync lock file, CIB dir, IPC all private).

~30 s: both clusters come up in parallel.
Run: .venv/bin/pytest -s tests/test_deploy_pacemaker_isolation.py
"""
from __future__ import annotations

import os
import re
import threading
import time

import pytest

from nfvha.verify.deploy.procfs import is_zombie
from tests.conftest import require_command, require_root

pytestmark = [pytest.mark.system, pytest.mark.slow]


def _daemon_pids(cluster) -> list[int]:
    log = (cluster.workdir / "supervisor.log").read_text()
    return [int(p) for p in re.findall(r"(?:corosync|pacemakerd) pid (\d+)", log)]


def test_two_clusters_run_side_by_side_and_stop_cleanly(tmp_path):
    require_root("Pacemaker/Corosync in namespaces")
    require_command("corosync", "pacemakerd", "crm_mon", "cibadmin", "nsenter")
    from nfvha.verify.deploy.pacemaker import PacemakerCluster

    system_cib = sorted(os.listdir("/var/lib/pacemaker/cib"))
    clusters = [PacemakerCluster(tmp_path / "one"), PacemakerCluster(tmp_path / "two")]
    errors: list[BaseException] = []

    def start(c) -> None:
        try:
            c.start()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=start, args=(c,)) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        print(f"\ntwo clusters online after {time.monotonic() - t0:.1f} s")
        one, two = clusters
        one.add_process_resource("only-in-one", ["/usr/bin/sleep", "600"])
        one.wait_running("only-in-one", 30)
        assert two.resource_state("only-in-one") is None
        names = {n.get("name") for c in clusters for n in c.status_xml().iter("node")}
        assert names == {one.node_name, two.node_name}
        pid = one.resource_pid("only-in-one")
    finally:
        pids = [p for c in clusters for p in _daemon_pids(c)]
        for c in clusters:
            c.stop()
    time.sleep(0.2)
    assert [p for p in pids if not is_zombie(p)] == []
    assert is_zombie(pid)
    assert not any(os.path.exists(f"/run/netns/{c.ns.name}") for c in clusters)
    assert not os.path.ismount(clusters[0].host_netns)
    # the system's own CIB directory was never written
    assert sorted(os.listdir("/var/lib/pacemaker/cib")) == system_cib
