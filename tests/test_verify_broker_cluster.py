"""tc056 short form: a real three-node RabbitMQ cluster, one node killed (kill -9).

One private cluster (Debian's rabbitmq-server, three nodes on 127.0.0.1 with
their own names, ports and data dirs) serves the module, unsupervised (the
full form, `nfvha verify run broker broker-classic`, puts the nodes under
Pacemaker; tests/test_verify_run_scenarios.py style runs take ~90 s each):

- quorum queue, its leader's node killed: the survivors see it go, a new
  leader is elected, producers with publisher confirms and consumers carry
  on through the survivors, 0 confirmed messages lost. Nobody restarts the
  node here, so Req 5.4.8 must fail ("no cluster manager").
- classic queue (the broken variant) on a node that is killed: messages
  confirmed while its node is down never reach a consumer — Req 5.4.6 and
  Req 5.4.10 fail.

The machine's own broker on 5672 answers before and after.
"""
from __future__ import annotations

import asyncio
import socket

import pytest

from nfvha.verify import sal as sal_mod
from nfvha.verify.engine import Phases
from nfvha.verify.model import load
from tests.conftest import missing

pytestmark = [pytest.mark.system, pytest.mark.slow]


def _system_broker_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory):
    from nfvha.verify.deploy.rabbitmq_cluster import RabbitCluster, available
    why = available()
    if why is not None:
        missing(why)
    rc = RabbitCluster(tmp_path_factory.mktemp("rabbit"), 3)
    rc.start(timeout=120)
    yield rc
    rc.stop()


def _run(rabbit, quorum: bool, victim: str):
    from nfvha.verify.scenarios import broker
    opts = broker.Options(quorum=quorum, victim=victim, drain_s=4.0,
                          phases=Phases(baseline_s=1.0, observe_s=2.0, settle_s=0.2))
    record, m = asyncio.run(broker.run(None, "unsupervised test cluster", opts, rabbit=rabbit))
    verdicts = {v.id: v for v in broker.judge(load(), record, m, sal_mod.get("SAL1"))}
    return record, m, verdicts


def test_quorum_queue_survives_its_leaders_node_with_nothing_lost(rabbit):
    system_before = _system_broker_up()
    assert len(rabbit.running_members("r2")) == 3
    record, m, v = _run(rabbit, quorum=True, victim="r1")
    f = record.facts
    assert rabbit.pid("r1") is None                       # really killed, not restarted
    assert f["published"] > 100 and f["lost_messages"] == 0, f
    assert record.first("failover") is not None, "no new quorum-queue leader"
    assert m.detection_ms is not None and m.detection_ms < 1000
    for rid in ("Req 5.4.6", "Req 5.4.7", "Req 5.4.10"):
        assert v[rid].verdict == "pass", (rid, v[rid].why)
    assert v["Req 5.4.8"].verdict == "fail" and "no cluster manager" in v["Req 5.4.8"].why
    assert _system_broker_up() == system_before


def test_classic_queue_loses_what_was_confirmed_while_its_node_was_down(rabbit):
    record, m, v = _run(rabbit, quorum=False, victim="r2")
    assert record.facts["lost_messages"] > 0, record.facts
    assert m.lost == record.facts["lost_messages"]
    assert v["Req 5.4.6"].verdict == "fail", v["Req 5.4.6"].why
    assert v["Req 5.4.10"].verdict == "fail", v["Req 5.4.10"].why
