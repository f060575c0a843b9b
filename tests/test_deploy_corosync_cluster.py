"""tc057's setup for real: three Corosync/Pacemaker nodes in network namespaces
(~45 s). kill -9 of corosync on node 1, which runs a resource:

- the survivors form a new membership without node 1 (token 1000 ms: a few s)
  and Pacemaker starts the resource on a survivor;
- with no fencing (no fence device exists for a namespace node), node 1's
  copy runs on: two copies of a resource that must run once. This is the
  split brain a correct tc057 deployment must fence away; the test pins it
  down so that a fencing implementation has a failing case to turn around.
"""
from __future__ import annotations

import os
import sys
import time

import pytest

from tests.conftest import free_port, require_command, require_root

pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_root("Corosync/Pacemaker in network namespaces")
    require_command("corosync", "pacemakerd", "crm_mon", "cibadmin", "ip", "nsenter")
    from nfvha.verify.deploy.corosync_cluster import CorosyncCluster
    c = CorosyncCluster(tmp_path_factory.mktemp("corosync3"), 3, net=57).start()
    yield c
    c.stop()


def test_three_nodes_come_online(cluster):
    assert sorted(cluster.online(2)) == sorted(n for n, _ in cluster.members)


def test_corosync_killed_membership_changes_resource_restarted_elsewhere_no_fencing(cluster):
    port = free_port()
    n1 = cluster.nodes[0]
    n1.add_process_resource("web", [sys.executable, "-m", "nfvha.verify.backend", "--host",
                                    "127.0.0.1", "--port", str(port), "--name", "web"],
                            monitor_ms=100)
    cluster.prefer("web", 1)
    old = n1.wait_running("web", 30)
    assert cluster.located("web", 2) == [cluster.members[0][0]]

    killed = cluster.kill_corosync(1)
    survivor = cluster.nodes[1]
    deadline = time.monotonic() + 20
    left = None
    while left is None and time.monotonic() < deadline:
        left = next((m for m in survivor.memberships() if m[2] == "left" and 1 in m[3]
                     and m[0] >= killed - 0.01), None)
        time.sleep(0.05)
    assert left is not None, "the survivors never formed a membership without node 1"
    detect_s = left[0] - killed
    assert 0 < detect_s < 15

    # Pacemaker recovers the resource on a survivor ...
    deadline = time.monotonic() + 20
    where: list[str] = []
    while time.monotonic() < deadline:
        where = cluster.located("web", 2)
        if where and where[0] != cluster.members[0][0]:
            break
        time.sleep(0.2)
    assert where and where[0] in (cluster.members[1][0], cluster.members[2][0]), where
    started = [e for e in survivor.op_events("web") + cluster.nodes[2].op_events("web")
               if e.task == "start" and e.rc == 0 and e.mono >= killed]
    assert started, "no start of the resource on a survivor"
    print(f"\ncorosync killed: membership without node 1 after {detect_s:.2f} s, resource "
          f"started on a survivor after {min(e.mono for e in started) - killed:.2f} s")
    # ... while, unfenced, node 1's copy is still running
    assert os.path.exists(f"/proc/{old}"), "node 1's copy died: fenced after all?"
