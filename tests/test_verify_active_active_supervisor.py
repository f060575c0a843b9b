"""Active/active without a cluster manager (nfvha's stand-in supervisor): the
measurements still hold and Req 5.4.5 says "no cluster manager". Also the
hook that lets another service (e.g. the nfvha controller API) be the instance."""
from __future__ import annotations

import sys

from nfvha.verify import model, sal, verdicts
from nfvha.verify.scenarios import active_active as aa
from tests.conftest import require_command


async def test_stand_in_restarts_but_5_4_5_fails_and_a_custom_service_is_used():
    require_command("haproxy")
    seen = []

    def argv_for(name: str, port: int) -> list:
        seen.append(name)
        return [sys.executable, "-m", "nfvha.verify.backend", "--port", str(port),
                "--name", f"custom-{name}"]

    inst = aa.Instances(cluster_manager="supervisor", argv_for=argv_for,
                        check_path="/fault-log", restart_delay_s=0.3)
    try:
        r, m = await aa.run(aa.Options(), inst)
    finally:
        await inst.stop()
    assert seen == ["s1", "s2", "s3"]
    assert r.facts["cluster_manager"] == "nfvha-supervisor"
    served = {s.detail for s in r.samples if s.probe == "http" and s.ok}
    assert served == {"custom-s1", "custom-s2", "custom-s3"}
    v = {x.id: x for x in verdicts.judge(model.load(), "active-active", r, m, sal.get("SAL1"))}
    assert v["Req 5.4.2"].verdict == "pass" and m.detection_ms < 1000
    assert v["Req 5.4.5"].verdict == "fail"
    assert v["Req 5.4.5"].why.startswith("fail: no cluster manager; s2 was restarted by "
                                         "nfvha's stand-in supervisor")
    restarted = r.first("instance_restarted")
    assert restarted is not None and 0.25 < restarted.t - r.fault_at < 2.0
    assert m.recovery_ms is not None and m.recovery_ms >= 1000 * (restarted.t - r.fault_at)
