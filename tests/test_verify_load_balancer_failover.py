"""tc053 short form: HAProxy killed on the VRRP master, for real (~15 s).

Two HAProxy instances (Debian) in network namespaces behind a keepalived VIP,
one API instance per node behind both; clients GET the VIP every 10 ms from
the client namespace. Unsupervised here (the full form, `nfvha verify run
load-balancer load-balancer-notrack`, has Pacemaker restart HAProxy):

- keepalived tracking HAProxy: the VIP moves to the backup within SAL1,
  the backup's HAProxy serves the clients, keepalived's FAULT is the alarm;
  nobody restarts the dead HAProxy, so Req 5.4.8 fails ("no cluster manager").
- keepalived without tracking (the broken variant): the VIP stays on the node
  whose HAProxy is dead, every client request fails until the end — Req
  5.4.6 and 5.4.7 fail.
"""
from __future__ import annotations

import asyncio

import pytest

from nfvha.verify import sal as sal_mod
from nfvha.verify.engine import Phases
from nfvha.verify.model import load
from tests.conftest import require_command, require_root

pytestmark = [pytest.mark.system, pytest.mark.slow]


def _run(track: bool):
    require_root("network namespaces and keepalived")
    require_command("haproxy", "keepalived", "ip")
    from nfvha.verify.scenarios import load_balancer as lb
    opts = lb.Options(track=track, net=153,
                      phases=Phases(baseline_s=1.0, observe_s=2.0, settle_s=0.3))
    record, m = asyncio.run(lb.run(None, "unsupervised test pair", opts))
    verdicts = {v.id: v for v in lb.judge(load(), record, m, sal_mod.get("SAL1"))}
    return record, m, verdicts


def test_backup_haproxy_takes_the_vip_when_the_masters_haproxy_dies():
    record, m, v = _run(track=True)
    backup = record.facts["backup"]
    assert record.first("failover") is not None
    assert m.detection_ms is not None and m.detection_ms < 1000
    # the takeover shows: after it, answers come through the backup's HAProxy
    after = [s for s in record.samples if s.probe == "http" and s.ok
             and s.t > record.first("failover").t]
    assert after and all(s.detail.endswith(f"via lb node-{backup}") for s in after)
    # both API instances keep serving behind the surviving load balancer
    assert {s.detail.split()[0] for s in after} == {"api-a", "api-b"}
    for rid in ("Req 5.4.6", "Req 5.4.7", "Req 5.4.9"):
        assert v[rid].verdict == "pass", (rid, v[rid].why)
    assert v["Req 5.4.8"].verdict == "fail" and "no cluster manager" in v["Req 5.4.8"].why


def test_without_tracking_the_vip_stays_on_a_dead_load_balancer():
    record, m, v = _run(track=False)
    assert record.first("failover") is None
    f = record.fault_at
    late = [s for s in record.samples if s.probe == "http" and s.t > f + 0.5]
    assert late and not any(s.ok for s in late)      # nobody answers at the VIP
    assert v["Req 5.4.6"].verdict == "fail", v["Req 5.4.6"].why
    assert v["Req 5.4.7"].verdict == "fail", v["Req 5.4.7"].why
