"""Real deployments under one real Pacemaker cluster (issue 4, Req 5.4.5-5.4.12).

One private single-node cluster (~20-25 s to come up) is shared by every
test in this module. Each test injects a real fault and prints what it
measured; figures go to docs/deploy-notes.md.

Run: .venv/bin/pytest -s tests/test_deploy_cluster_scenarios.py
"""
from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request

import pytest

from nfvha.verify.deploy.procfs import is_zombie
from tests.conftest import require_command, require_rabbitmq, require_root

pytestmark = [pytest.mark.system, pytest.mark.slow]

SAL1_DETECT_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_root("Pacemaker/Corosync and network namespaces")
    require_command("corosync", "pacemakerd", "crm_mon", "cibadmin", "keepalived", "ip")
    from nfvha.verify.deploy.pacemaker import PacemakerCluster

    t0 = time.monotonic()
    c = PacemakerCluster(tmp_path_factory.mktemp("pcmk")).start()
    print(f"\ncluster online after {time.monotonic() - t0:.1f} s")
    yield c
    c.stop()


def _get(url: str, timeout: float = 1.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status


def test_pacemaker_detects_and_restarts_a_killed_process(cluster, tmp_path):
    port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("ok\n")
    cluster.add_process_resource(
        "web-t1", ["/usr/bin/python3", "-m", "http.server", str(port), "--bind", "127.0.0.1",
                   "--directory", str(www)], monitor_ms=100)
    try:
        pid = cluster.wait_running("web-t1", 30)
        deadline = time.monotonic() + 10
        while True:  # the resource runs in *our* netns: reachable on our loopback
            try:
                assert _get(f"http://127.0.0.1:{port}/") == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "service never answered"
                time.sleep(0.05)

        killed = cluster.kill("web-t1")
        det = cluster.wait_failure_detected("web-t1", since=killed, timeout=10)
        back = cluster.wait_restarted("web-t1", since=killed, timeout=20)
        new_pid = cluster.wait_running("web-t1", 10)
        detect_s, restart_s = det.mono - killed, back.mono - killed
        print(f"\npacemaker kill -9 @100ms monitor: detected {detect_s * 1000:.0f} ms, "
              f"restarted {restart_s * 1000:.0f} ms")
        assert new_pid != pid
        assert 0 <= detect_s < SAL1_DETECT_S
        assert detect_s <= restart_s < 10
        assert det.rc not in (None, 0) and det.interval_ms == 100
        assert _get(f"http://127.0.0.1:{port}/") == 200
        assert cluster.fail_count("web-t1") >= 1
    finally:
        cluster.remove_resource("web-t1")
    assert cluster.resource_state("web-t1") is None


def test_pacemaker_health_check_catches_a_frozen_process(cluster, tmp_path):
    require_command("curl")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cluster.add_process_resource(
        "web-t3", ["/usr/bin/python3", "-m", "http.server", str(port), "--bind", "127.0.0.1",
                   "--directory", str(tmp_path)], monitor_ms=100,
        monitor_check=["/usr/bin/curl", "-sf", "-m", "0.3", "-o", "/dev/null", url],
        term_grace_s=1)
    try:
        pid = cluster.wait_running("web-t3", 30)
        frozen = cluster.kill("web-t3", signal.SIGSTOP)   # alive for kill -0, not serving
        det = cluster.wait_failure_detected("web-t3", since=frozen, timeout=10)
        back = cluster.wait_restarted("web-t3", since=frozen, timeout=30)
        new_pid = cluster.wait_running("web-t3", 10)
        print(f"\npacemaker SIGSTOP, curl check -m 0.3 @100ms: detected "
              f"{(det.mono - frozen) * 1000:.0f} ms, "
              f"restarted {(back.mono - frozen) * 1000:.0f} ms")
        assert new_pid != pid
        assert det.mono - frozen < SAL1_DETECT_S
        assert _get(url) == 200
    finally:
        cluster.remove_resource("web-t3")


def test_no_failure_is_reported_when_nothing_was_killed(cluster):
    # the harness must be able to say "no": no fault -> no detection event
    cluster.add_process_resource("idle-t2", ["/usr/bin/sleep", "600"], monitor_ms=100)
    try:
        cluster.wait_running("idle-t2", 30)
        since = time.monotonic()
        time.sleep(0.5)
        assert cluster.failure_detected("idle-t2", since) is None
    finally:
        cluster.remove_resource("idle-t2")


# ---------------------------------------------------------------- VRRP
@pytest.fixture(scope="module")
def vrrp(cluster, tmp_path_factory):
    from nfvha.verify.deploy.keepalived import VrrpPair

    t0 = time.monotonic()
    pair = VrrpPair(tmp_path_factory.mktemp("vrrp"), cluster=cluster, net=7).start()
    print(f"\nvrrp pair up after {time.monotonic() - t0:.1f} s")
    yield pair
    pair.stop()
    assert not any(os.path.exists(f"/run/netns/{ns.name}")
                   for ns in (*pair.lan.nodes.values(), pair.lan.client))


def _stable(pair, timeout: float = 30) -> str:
    """One master with the VIP, the other BACKUP, every process running."""
    return pair.wait_stable(timeout)


def test_vrrp_service_kill_fails_over_and_failed_node_becomes_backup(vrrp):
    master = _stable(vrrp)
    backup = vrrp.other(master)
    assert vrrp.fetch() == f"ok node-{master}"
    killed = vrrp.kill_service(master)
    fault = vrrp.wait_event(master, "state", "FAULT", killed, 5)
    took = vrrp.wait_event(backup, "vip", "add", killed, 5)
    assert vrrp.fetch() == f"ok node-{backup}"
    # Req 5.4.8/5.4.6: the cluster manager restarts the service and the failed
    # node rejoins as the new backup; it does not take the VIP back (nopreempt)
    rejoined = vrrp.wait_event(master, "state", "BACKUP", killed, 15)
    time.sleep(0.5)
    assert vrrp.vip_holders() == {backup}
    assert vrrp.states() == {backup: "MASTER", master: "BACKUP"}
    print(f"\nvrrp service kill -9: master FAULT {(fault.mono - killed) * 1000:.1f} ms, "
          f"VIP on backup {(took.mono - killed) * 1000:.1f} ms, "
          f"failed node BACKUP again {(rejoined.mono - killed) * 1000:.0f} ms")
    assert took.mono - killed < SAL1_DETECT_S


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_vrrp_keepalived_killed_backup_takes_over_and_cluster_restarts_it(vrrp, sig):
    master = _stable(vrrp)
    backup = vrrp.other(master)
    killed = vrrp.kill_keepalived(master, sig)
    if sig == signal.SIGKILL:   # it cannot say so itself; its pids tell
        _wait_for(lambda: vrrp.states()[master] == "DEAD" or None, 0.1)
    took = vrrp.wait_event(backup, "state", "MASTER", killed, 5)
    vip = vrrp.wait_event(backup, "vip", "add", killed, 5)
    rejoined = vrrp.wait_event(master, "state", "BACKUP", killed, 20)
    gone = vrrp.wait_event(master, "vip", "del", killed, 20)
    vrrp.wait_state(master, "BACKUP", 5)
    time.sleep(0.3)
    assert vrrp.vip_holders() == {backup}
    assert vrrp.fetch() == f"ok node-{backup}"
    print(f"\nvrrp keepalived {sig.name}: backup MASTER {(took.mono - killed) * 1000:.0f} ms, "
          f"VIP on backup {(vip.mono - killed) * 1000:.0f} ms, dead master's VIP removed "
          f"{(gone.mono - killed) * 1000:.0f} ms, restarted as BACKUP "
          f"{(rejoined.mono - killed) * 1000:.0f} ms")
    assert took.mono - killed < SAL1_DETECT_S


def test_vrrp_link_down_fails_over_and_link_up_rejoins_as_backup(vrrp):
    master = _stable(vrrp)
    backup = vrrp.other(master)
    t = vrrp.link_down(master)
    fault = vrrp.wait_event(master, "state", "FAULT", t, 5)
    took = vrrp.wait_event(backup, "vip", "add", t, 5)
    assert vrrp.fetch() == f"ok node-{backup}"
    up = vrrp.link_up(master)
    rejoined = vrrp.wait_event(master, "state", "BACKUP", up, 10)
    time.sleep(0.3)
    assert vrrp.vip_holders() == {backup}
    print(f"\nvrrp link down: master FAULT {(fault.mono - t) * 1000:.1f} ms, VIP on backup "
          f"{(took.mono - t) * 1000:.0f} ms; "
          f"link up -> BACKUP {(rejoined.mono - up) * 1000:.0f} ms")
    assert took.mono - t < SAL1_DETECT_S


# ------------------------------------------------------------- RabbitMQ
def test_mq_killed_consumer_is_recovered_by_cluster_and_nothing_is_lost(cluster, tmp_path):
    url = require_rabbitmq()
    from nfvha.verify.deploy.rabbitmq_consumers import ConsumerGroup

    group = ConsumerGroup(tmp_path, n=3, url=url, cluster=cluster).start()
    # start() returns past the second of every start op: Pacemaker ignores a
    # monitor failure stamped in the same second as the start
    last_start = max(e.wall for cid in group.ids for e in cluster.op_events(group.resource(cid))
                     if e.task == "start" and e.rc == 0)
    assert int(last_start) < int(time.time())
    watch = group.watch()
    pub = group.publisher()
    try:
        pub.start(rate_per_s=200)
        time.sleep(0.5)
        old_pid = group.consumer_pid("c1")
        killed = group.kill_consumer("c1")
        drop = _wait_for(lambda: watch.first(lambda n: n == 2, killed), 5)
        det = cluster.wait_failure_detected(group.resource("c1"), killed, 10)
        try:
            back = _wait_for(lambda: watch.first(lambda n: n == 3, drop[0]), 20)
        except AssertionError as exc:      # say why: the watch, the cluster's view
            raise AssertionError(
                f"{exc}; broker counts {watch.changes[-5:]}, watch error {watch.error}, "
                f"reconnects {watch.reconnects}, c1 state "
                f"{cluster.resource_state(group.resource('c1'))}, pid "
                f"{group.consumer_pid('c1')} (was {old_pid})") from None
        time.sleep(0.5)
        pub.stop()
        rep = group.wait_drained(pub.published, 15)
        print(f"\nmq consumer kill -9: broker consumers 3->2 after "
              f"{(drop[0] - killed) * 1000:.1f} ms, "
              f"pacemaker detected {(det.mono - killed) * 1000:.0f} ms, back to 3 consumers "
              f"{(back[0] - killed) * 1000:.0f} ms; published {rep.published}, lost "
              f"{len(rep.lost)}, redelivered {rep.redelivered}, duplicates {rep.duplicates}, "
              f"per consumer {rep.per_consumer}")
        assert rep.published > 100 and not pub.failed
        assert rep.lost == []
        assert group.consumer_pid("c1") not in (None, old_pid)
        assert drop[0] - killed < SAL1_DETECT_S
        # the restarted c1 consumed again after it came back
        assert any(d.consumer == "c1" and d.pid != old_pid for d in group.deliveries())
    finally:
        watch.stop()
        group.stop()


def _wait_for(fn, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v is not None:
            return v
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s")


def test_cluster_stop_leaves_no_process_and_can_start_again(cluster):
    """Runs last: stop() must leave no corosync/pacemaker behind."""
    import re

    log = (cluster.workdir / "supervisor.log").read_text()
    pids = [int(p) for p in re.findall(r"(?:corosync|pacemakerd) pid (\d+)", log)]
    assert pids
    cluster.stop()
    time.sleep(0.2)
    alive = [p for p in pids if not is_zombie(p)]
    assert alive == []
    assert not os.path.exists(f"/run/netns/{cluster.ns.name}")
