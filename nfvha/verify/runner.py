"""Runs named scenarios and turns their records into results and JSON.

Scenario names: active-active (HAProxy with health checks),
active-active-nocheck (the same without health checks: must fail
Req 5.4.2/5.4.3), active-passive and message-queue (need the cluster
engineer's deployments; "not yet available" until they are wired in), or a
Yardstick test case YAML file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import sal as sal_mod
from .metrics import Measurement
from .model import Model, load
from .timeline import Record
from .verdicts import Verdict, judge


class NotAvailable(RuntimeError):
    """The scenario's deployment does not exist (yet) on this installation."""


@dataclass
class ScenarioResult:
    name: str
    record: Record
    measurement: Measurement
    verdicts: List[Verdict]
    sal_reached: Optional[str]
    extra_verdicts: List[Verdict] = field(default_factory=list)

    def summary(self) -> Dict[str, Any]:
        m = self.measurement
        return {
            "name": self.name,
            "detection_ms": _r(m.detection_ms),
            "outage_ms": _r(m.outage_ms),
            "outage_precision_ms": _r(m.outage_precision_ms),
            "recovery_ms": _r(m.recovery_ms),
            "lost": m.lost,
            "requirements": [v.as_dict() for v in self.verdicts + self.extra_verdicts],
        }

    def details(self) -> Dict[str, Any]:
        """Everything the HTML report and a later reader need; times in ms from the fault."""
        r, m = self.record, self.measurement
        f = r.fault_at if r.fault_at is not None else r.started
        d = self.summary()
        d.update({
            "sal_reached": self.sal_reached,
            "measurement": {k: _r(v) if isinstance(v, float) else v
                            for k, v in m.__dict__.items()},
            "facts": {k: v for k, v in r.facts.items() if not isinstance(v, float) or
                      not k.startswith("victim_last")},
            "events": [{"t_ms": _r(1000 * (e.t - f)), "kind": e.kind, "detail": e.detail}
                       for e in sorted(r.events, key=lambda e: e.t)],
            "samples": [[_r(1000 * (s.t - f)), int(s.ok), _r(s.latency_ms), s.detail]
                        for s in sorted(r.samples, key=lambda s: s.t)
                        if s.probe == r.facts.get("main_probe", "http")],
        })
        return d


def _r(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(x, 1)


SCENARIO_NAMES = ("active-active", "active-active-nocheck", "active-passive", "message-queue",
                  "broker", "broker-classic", "load-balancer", "load-balancer-notrack",
                  "cluster-manager", "cluster-manager-nofence")


class Session:
    """One invocation's shared deployments (started on first use, stopped at the end)."""

    def __init__(self, cluster_manager: str = "auto") -> None:
        from .restarters import SharedCluster
        self.cluster_manager = cluster_manager
        self.shared = SharedCluster()
        self._aa = None

    def active_active(self):
        if self._aa is None:
            from .scenarios.active_active import Instances
            self._aa = Instances(cluster_manager=self.cluster_manager, shared=self.shared)
        return self._aa

    async def cluster(self):
        """The shared Pacemaker cluster, or None (with the reason) when the
        cluster manager is 'supervisor', or 'auto' where Pacemaker cannot run
        (no root, not installed). Where it can run, a cluster that fails to
        start is an error (RuntimeError), never a silent run without it."""
        from .restarters import available
        if self.cluster_manager == "supervisor":
            return None, "--cluster-manager supervisor"
        why = available()
        if why is not None and self.cluster_manager == "auto":
            return None, f"Pacemaker cannot run here: {why}"
        return await self.shared.get(), None

    async def close(self) -> None:
        if self._aa is not None:
            await self._aa.stop()
            self._aa = None
        await self.shared.stop()


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
    if name in SCENARIO_NAMES[4:]:        # the HA middleware as the victim (tc053/56/57)
        from .scenarios import middleware
        return await middleware.run(name, sal, model, session)
    raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIO_NAMES)} "
                     "or a Yardstick test case .yaml")


def result(name: str, model_scenario: str, record: Record, m: Measurement, sal: sal_mod.Sal,
           model: Model) -> ScenarioResult:
    return ScenarioResult(name, record, m, judge(model, model_scenario, record, m, sal),
                          sal_mod.reached(m.detection_ms, m.recovery_ms))


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
