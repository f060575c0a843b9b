"""The HA middleware itself as the victim (Yardstick tc053, tc056): dispatch.

`broker` / `broker-classic` (tc056, nfvha/verify/scenarios/broker.py) and
`load-balancer` / `load-balancer-notrack` (tc053,
nfvha/verify/scenarios/load_balancer.py) and `cluster-manager` /
`cluster-manager-nofence` (tc057, nfvha/verify/scenarios/cluster_manager.py,
its own three-node cluster) judge their own list of requirements (the
seed's Table 4 puts HAProxy, rabbitmq-server and corosync under
Active/Passive: Req 5.4.6–5.4.9; the broker adds Req 5.4.10).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import sal as sal_mod
from ..model import Model

if TYPE_CHECKING:
    from ..results import ScenarioResult
    from ..session import Session

NAMES = ("broker", "broker-classic", "load-balancer", "load-balancer-notrack",
         "cluster-manager", "cluster-manager-nofence")


async def run(name: str, sal: sal_mod.Sal, model: Model, session: Session) -> ScenarioResult:
    from ..results import NotAvailable, ScenarioResult
    if name.startswith("cluster-manager"):      # its own three-node cluster
        from . import cluster_manager as cm
        why = cm.available()
        if why is not None:
            raise NotAvailable(f"scenario {name!r} cannot run here: {why}")
        record, m = await cm.run(cm.Options(fencing=name == "cluster-manager"))
        return ScenarioResult(name, record, m, cm.judge(model, record, m, sal),
                              sal_mod.reached(m.detection_ms, m.recovery_ms))
    cluster, note = await session.cluster()
    if name.startswith("broker"):
        from ..deploy.rabbitmq_cluster import available
        from . import broker as mod
        why = available()
        if why is not None:
            raise NotAvailable(f"scenario {name!r} needs RabbitMQ here: {why}")
        record, m = await mod.run(cluster, note, mod.Options(quorum=name == "broker"))
    else:
        from . import load_balancer as mod  # type: ignore[no-redef]
        why = mod.available()
        if why is not None:
            raise NotAvailable(f"scenario {name!r} cannot run here: {why}")
        record, m = await mod.run(cluster, note, mod.Options(track=name == "load-balancer"))
    return ScenarioResult(name, record, m, mod.judge(model, record, m, sal),
                          sal_mod.reached(m.detection_ms, m.recovery_ms))
