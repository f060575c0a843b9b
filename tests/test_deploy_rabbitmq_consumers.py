"""Redundant RabbitMQ consumers on the real local broker (no cluster manager).

The cluster-managed variant (killed consumer restarted by Pacemaker) is in
test_deploy_cluster_scenarios.py.
"""
from __future__ import annotations

import time

import amqp
import pytest

from nfvha.verify.deploy.rabbitmq_consumers import ConsumerGroup, connect
from tests.conftest import require_rabbitmq

pytestmark = pytest.mark.system


@pytest.fixture
def url():
    return require_rabbitmq()


def test_kill_one_of_three_consumers_loses_nothing_and_broker_sees_it(url, tmp_path):
    with ConsumerGroup(tmp_path, n=3, url=url) as group:
        watch = group.watch(interval=0.01)
        pub = group.publisher()
        try:
            pub.start(rate_per_s=300)
            time.sleep(0.5)
            killed = group.kill_consumer("c2")
            time.sleep(0.7)
            pub.stop()
            rep = group.wait_drained(pub.published, 10)
            drop = watch.first(lambda n: n == 2, killed)
        finally:
            watch.stop()
        assert drop is not None, watch.changes
        print(f"\nbroker consumer count 3->2 {(drop[0] - killed) * 1000:.1f} ms after kill -9; "
              f"published {rep.published}, lost {len(rep.lost)}, "
              f"redelivered {rep.redelivered}, per consumer {rep.per_consumer}")
        assert rep.published >= 200 and not pub.failed
        assert rep.lost == []
        assert drop[0] - killed < 1.0
        assert group.queue_counts()[1] == 2          # nobody restarts it here
        assert set(rep.per_consumer) == {"c1", "c2", "c3"}


def test_malformed_messages_are_dropped_and_consumers_keep_working(url, tmp_path):
    with ConsumerGroup(tmp_path, n=2, url=url, work_ms=0) as group:
        conn = connect(url)
        ch = conn.channel()
        for body in (b"not json", b"\xff\xfe", b'{"no_seq": 1}', b"[1,2]", b"x" * 100_000):
            ch.basic_publish(amqp.Message(body), exchange="", routing_key=group.queue)
        conn.close()
        pub = group.publisher()
        pub.publish(50)
        pub.close()
        rep = group.wait_drained(pub.published, 10)
        assert rep.lost == [] and rep.consumed == 50
        assert group.queue_counts() == (0, 2)       # garbage not requeued, both alive


def test_the_check_reports_real_loss(url, tmp_path):
    # the harness must be able to say "lost": purge a backlog behind a slow consumer
    with ConsumerGroup(tmp_path, n=1, url=url, prefetch=1, work_ms=100) as group:
        pub = group.publisher()
        pub.publish(30)
        pub.close()
        conn = connect(url)
        purged = conn.channel().queue_purge(group.queue)
        conn.close()
        rep = group.wait_drained(pub.published, 1.0)
        assert purged > 0
        assert len(rep.lost) >= purged


def test_stop_deletes_the_queue(url, tmp_path):
    group = ConsumerGroup(tmp_path, n=1, url=url).start()
    queue = group.queue
    watch = group.watch()
    group.stop()
    deadline = time.monotonic() + 10
    while watch.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watch.error is not None and "NotFound" in watch.error   # ends, no crash
    watch.stop()
    conn = connect(url)
    try:
        with pytest.raises(amqp.exceptions.NotFound):
            conn.channel().queue_declare(queue, passive=True)
    finally:
        conn.close()


def test_watch_survives_the_broker_closing_its_connection(url, tmp_path):
    """A dropped watch connection (forced close here; a missed heartbeat on a
    loaded machine) is reconnected: the count changes after it are still seen."""
    import subprocess

    from tests.conftest import require_command
    require_command("rabbitmqctl")
    with ConsumerGroup(tmp_path, n=2, url=url) as group:
        watch = group.watch(interval=0.01)
        try:
            deadline = time.monotonic() + 15
            while watch.current() != 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert watch.current() == 2, watch.changes
            out = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid",
                                  "client_properties"], capture_output=True, text=True,
                                 timeout=30).stdout
            pids = [line.split()[0] for line in out.splitlines() if watch.name in line]
            assert len(pids) == 1, out
            subprocess.run(["rabbitmqctl", "-q", "close_connection", pids[0], "test"],
                           check=True, capture_output=True, timeout=30)
            deadline = time.monotonic() + 10
            while watch.reconnects == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert watch.reconnects >= 1 and watch.error, watch.error
            killed = group.kill_consumer("c2")
            deadline = time.monotonic() + 5
            while watch.first(lambda n: n == 1, killed) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert watch.first(lambda n: n == 1, killed) is not None, watch.changes
        finally:
            watch.stop()
