"""Runs named scenarios and turns their records into results and JSON.

Scenario names: active-active (HAProxy with health checks),
active-active-nocheck (the same without health checks: must fail
Req 5.4.2/5.4.3), active-passive and message-queue; the HA middleware as
the victim (broker, load-balancer, cluster-manager and their broken
variants, scenarios/middleware.py); keystone and keystone-nohealth (real
Keystone behind HAProxy, tc046, scenarios/keystone.py); or a Yardstick test
case YAML file.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from . import sal as sal_mod
from .model import Model, load
from .results import NotAvailable, ScenarioResult, result
from .session import Session

__all__ = ["NotAvailable", "ScenarioResult", "Session", "result", "SCENARIO_NAMES", "run_one",
           "summary", "full_report", "latest_verdicts"]


SCENARIO_NAMES = ("active-active", "active-active-nocheck", "active-passive", "message-queue",
                  "broker", "broker-classic", "load-balancer", "load-balancer-notrack",
                  "cluster-manager", "cluster-manager-nofence", "keystone", "keystone-nohealth")


async def run_one(name: str, sal: sal_mod.Sal, model: Optional[Model] = None,
                  session: Optional[Session] = None) -> ScenarioResult:
    model = model or load()
    own = session is None
    session = session or Session()
    try:
        return await _run_one(name, sal, model, session)
    finally:
        if own:
            await session.close()


async def _run_one(name: str, sal: sal_mod.Sal, model: Model, session: Session
                   ) -> ScenarioResult:
    if name.endswith((".yaml", ".yml")) and os.path.exists(name):
        from .yardstick import run_case
        return await run_case(name, sal, model, session.active_active(), session=session)
    if name in ("active-active", "active-active-nocheck"):
        from .scenarios import active_active as aa
        record, m = await aa.run(aa.Options(checks=name == "active-active"),
                                 session.active_active())
        return result(name, "active-active", record, m, sal, model)
    if name in ("active-passive", "message-queue"):
        mod = {"active-passive": "keepalived", "message-queue": "rabbitmq_consumers"}[name]
        try:
            __import__(f"nfvha.verify.deploy.{mod}")
        except ImportError as exc:
            raise NotAvailable(f"scenario {name!r} is not yet available: it needs "
                               f"nfvha/verify/deploy/{mod}.py ({exc})") from exc
        cluster, note = await session.cluster()
        if name == "active-passive":
            from .scenarios import active_passive as ap
            record, m = await ap.run(cluster, note)
        else:
            from .scenarios import message_queue as mq
            record, m = await mq.run(cluster, note)
        return result(name, name, record, m, sal, model)
    if name in ("keystone", "keystone-nohealth"):      # a real OpenStack API service (tc046)
        from .scenarios import keystone
        return await keystone.run_named(name, sal, model, session)
    from .scenarios import middleware
    if name in middleware.NAMES:          # the HA middleware as the victim (tc053/56/57)
        return await middleware.run(name, sal, model, session)
    raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIO_NAMES)} "
                     "or a Yardstick test case .yaml")


def summary(results: List[ScenarioResult], sal: sal_mod.Sal) -> Dict[str, Any]:
    """The exact `nfvha verify run --json` document."""
    return {"sal": sal.name, "scenarios": [r.summary() for r in results]}


def full_report(results: List[ScenarioResult], sal: sal_mod.Sal) -> Dict[str, Any]:
    return {"sal": sal.name, "scenarios": [r.details() for r in results]}


def latest_verdicts(report: Dict[str, Any]) -> Dict[str, str]:
    """Requirement id → verdict from a run's JSON (summary or full); a later
    scenario's verdict for the same requirement overrides an earlier one."""
    out: Dict[str, str] = {}
    if not isinstance(report, dict):
        raise ValueError("not a run's JSON: expected an object with 'scenarios'")
    for sc in report.get("scenarios", []):
        for req in sc.get("requirements", []) if isinstance(sc, dict) else []:
            if not isinstance(req, dict):
                continue
            if str(req.get("id", "")).startswith("Req ") and req.get("verdict") in ("pass",
                                                                                    "fail"):
                out[req["id"]] = req["verdict"]
    return out
