"""tc057's setup for real: three Corosync/Pacemaker nodes in network namespaces,
with a fence device for them (~50 s).

kill -9 of corosync on node 1, which runs a resource (an HTTP service in the
nodes' shared LAN namespace): the survivors form a membership without node 1
(token 1000 ms: a few s), fence it (deploy/fence_netns.py powers the node's
whole process tree off — node 1's copy of the resource dies with it), and
start the resource on a survivor, where it serves again. Exactly one copy
runs at the end.
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
    require_command("corosync", "pacemakerd", "crm_mon", "cibadmin", "ip", "nsenter", "curl")
    from nfvha.verify.deploy.corosync_cluster import CorosyncCluster
    c = CorosyncCluster(tmp_path_factory.mktemp("corosync3"), 3, net=57).start()
    yield c
    c.stop()


def _get(cluster, port: int) -> bool:
    r = cluster.lan.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "0.5",
                         f"http://127.0.0.1:{port}/"], check=False)
    return r.stdout == "200"


def test_three_nodes_come_online(cluster):
    assert sorted(cluster.online(2)) == sorted(n for n, _ in cluster.members)


def test_corosync_killed_node_fenced_and_resource_recovered_on_a_survivor(cluster):
    cluster.enable_fencing()
    port = free_port()
    n1 = cluster.nodes[0]
    n1.add_process_resource("web", [sys.executable, "-m", "nfvha.verify.backend", "--host",
                                    "127.0.0.1", "--port", str(port), "--name", "web"],
                            monitor_ms=100, netns_name=cluster.lan.name)
    cluster.prefer("web", 1)
    old = n1.wait_running("web", 30)
    assert cluster.located("web", 2) == [cluster.members[0][0]]
    deadline = time.monotonic() + 10
    while not _get(cluster, port):
        assert time.monotonic() < deadline, "the resource never served"
        time.sleep(0.1)

    killed = cluster.kill_corosync(1)
    survivor = cluster.nodes[1]
    left = None
    deadline = time.monotonic() + 20
    while left is None and time.monotonic() < deadline:
        left = next((m for m in survivor.memberships() if m[2] == "left" and 1 in m[3]
                     and m[0] >= killed - 0.01), None)
        time.sleep(0.05)
    assert left is not None, "the survivors never formed a membership without node 1"

    served = None
    deadline = time.monotonic() + 30
    while served is None and time.monotonic() < deadline:
        where = cluster.located("web", 2)
        if where and where[0] != cluster.members[0][0] and _get(cluster, port):
            served = time.monotonic()
        time.sleep(0.1)
    assert served is not None, f"not recovered on a survivor: {cluster.located('web', 2)}"
    fenced = [e for e in survivor.op_events() if e.kind == "fencing" and e.mono >= killed]
    assert fenced, "no fencing alert"
    assert not os.path.exists(f"/proc/{old}") or _zombie(old), "node 1's copy survived"
    assert len(cluster.located("web", 3)) == 1
    print(f"\ncorosync killed: membership without node 1 {left[0] - killed:.2f} s, fenced "
          f"{fenced[0].mono - killed:.2f} s, serving from a survivor {served - killed:.2f} s")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
