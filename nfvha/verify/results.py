"""What a scenario run gives back: its result and the verdicts on it.

Below the runner and the scenario dispatchers (runner, yardstick,
scenarios/middleware), which all build these: the imports point one way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import sal as sal_mod
from .metrics import Measurement
from .model import Model
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


def result(name: str, model_scenario: str, record: Record, m: Measurement, sal: sal_mod.Sal,
           model: Model) -> ScenarioResult:
    return ScenarioResult(name, record, m, judge(model, model_scenario, record, m, sal),
                          sal_mod.reached(m.detection_ms, m.recovery_ms))
