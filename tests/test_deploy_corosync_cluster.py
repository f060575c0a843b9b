"""tc057 short form for real: three Corosync/Pacemaker nodes in network
namespaces with a fence device for them (~55 s in all).

`scenarios/cluster_manager.py` on the module's cluster: kill -9 of corosync
on node 1, which runs the resource (an HTTP service in the nodes' shared LAN
namespace, probed every 10 ms). The survivors form a membership without
node 1, fence it (deploy/fence_netns.py powers the node's whole process tree
off — node 1's copy dies with it) and start the resource on a survivor,
where it serves again: exactly one copy at the end, Req 5.4.6–5.4.9 pass
(judged at SAL3 here so that a loaded machine does not decide; the figures
are printed). The unfenced variant (`nfvha verify run
cluster-manager-nofence`) leaves node 1's copy running and fails 5.4.6.
"""
from __future__ import annotations

import asyncio

import pytest

from nfvha.verify import sal as sal_mod
from nfvha.verify.engine import Phases
from nfvha.verify.model import load
from tests.conftest import require_command, require_root

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


def test_corosync_killed_node_fenced_and_resource_recovered_on_a_survivor(cluster):
    from nfvha.verify.scenarios import cluster_manager as cm
    opts = cm.Options(fencing=True, phases=Phases(baseline_s=1.0, observe_s=25.0,
                                                  settle_s=0.5))
    record, m = asyncio.run(cm.run(opts, cluster=cluster))
    f = record.facts
    assert record.first("detected") is not None, "no membership without node 1"
    assert record.first("fenced") is not None, "node 1 was not fenced"
    assert record.first("instance_back") is not None, "not serving again from a survivor"
    assert f["resource_located"] and f["resource_located"][0] != cluster.members[0][0]
    assert f["copies_running"] == 1 and not f["old_copy_alive"], f
    verdicts = cm.judge(load(), record, m, sal_mod.get("SAL3"))
    for v in verdicts:
        assert v.verdict == "pass", (v.id, v.why)
    fenced = record.first("fenced").t - record.fault_at
    print(f"\ncorosync killed: membership without node 1 {m.detection_ms:.0f} ms, fenced "
          f"{1000 * fenced:.0f} ms, client outage {m.outage_ms:.0f} ms "
          f"(+{m.outage_precision_ms:.0f}), recovery {m.recovery_ms:.0f} ms")
