"""A verdict per requirement, with a "why" that cites the measured numbers.

Each requirement of the model names a `check`; the functions below are
those checks. They read only the record (events, facts) and the
measurement, so every verdict can be traced back to timestamps.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .metrics import Measurement
from .model import Model
from .sal import Sal
from .timeline import Record


@dataclass(frozen=True)
class Verdict:
    id: str
    verdict: str        # "pass" | "fail"
    why: str

    def as_dict(self) -> dict:
        return {"id": self.id, "verdict": self.verdict, "why": self.why}


Check = Callable[[Record, Measurement, Sal], tuple]


def _ms(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.0f} ms"


def _since_fault(r: Record, t: Optional[float]) -> Optional[float]:
    f = r.fault_at
    return None if t is None or f is None else 1000.0 * (t - f)


def lb_balances(r: Record, m: Measurement, sal: Sal) -> tuple:
    fault = r.fault_at if r.fault_at is not None else float("inf")
    served = Counter(s.detail for s in r.samples
                     if s.probe == "http" and s.ok and s.t < fault)
    names = list(r.facts.get("instances", []))
    spread = ", ".join(f"{n} {served.get(n, 0)}" for n in names)
    total = sum(served.values())
    missing = [n for n in names if served.get(n, 0) == 0]
    if total == 0:
        return False, "no request succeeded before the fault"
    if missing:
        return False, f"{', '.join(missing)} got no request of {total} in the baseline ({spread})"
    return True, (f"HAProxy spread the {total} baseline requests over all {len(names)} "
                  f"instances ({spread})")


def lb_detects(r: Record, m: Measurement, sal: Sal) -> tuple:
    victim = r.facts.get("victim", "the instance")
    gap = r.facts.get("stats_max_gap_ms")
    how = f"read from HAProxy's stats socket (polled every 10 ms, largest gap {_ms(gap)})"
    if m.detection_ms is None:
        hc = r.facts.get("health_check")
        return False, (f"HAProxy never marked {victim} DOWN after the fault (health check: {hc}); "
                       f"{how}")
    ok = sal.detection_ok(m.detection_ms)
    return ok, (f"HAProxy marked {victim} DOWN {_ms(m.detection_ms)} after the kill; "
                f"{sal.name} needs < {sal.detection_ms:.0f} ms; {how}")


def lb_isolates(r: Record, m: Measurement, sal: Sal) -> tuple:
    victim = r.facts.get("victim", "the instance")
    det = r.first("detected")
    routed = r.facts.get("victim_routed_after_fault")
    last_routed = _since_fault(r, r.facts.get("victim_last_routed"))  # type: ignore[arg-type]
    serving = r.first("instance_serving")
    back = r.first("instance_back")
    if det is None:
        return False, (f"not isolated: HAProxy kept {victim} in rotation — {routed} requests "
                       f"were sent to the dead instance, the last {_ms(last_routed)} after the "
                       f"fault ({r.facts.get('retries_after_fault')} retries, "
                       f"{r.facts.get('redispatches_after_fault')} redispatches)")
    det_ms = _since_fault(r, det.t)
    # Allow one stats poll (+ one probe period) between HAProxy's decision and our read.
    slack = 10.0 + float(r.facts.get("stats_max_gap_ms", 10.0) or 10.0)
    if last_routed is not None and det_ms is not None and last_routed > det_ms + slack:
        return False, (f"{victim} marked DOWN at {_ms(det_ms)} but still got requests "
                       f"until {_ms(last_routed)}")
    if back is not None and serving is not None and back.t < serving.t:
        return False, (f"HAProxy re-admitted {victim} at {_ms(_since_fault(r, back.t))}, before "
                       f"it served again ({_ms(_since_fault(r, serving.t))})")
    if back is None:
        return False, (f"{victim} isolated at {_ms(det_ms)} but never re-admitted within the "
                       "observation")
    failed_after = sorted((s for s in r.samples if s.probe == "http" and not s.ok
                           and s.t > det.t), key=lambda s: s.t)
    if failed_after:
        kinds = Counter(s.detail.split(":")[0] for s in failed_after)
        return False, (f"{len(failed_after)} client requests failed after {victim} was "
                       f"isolated ({', '.join(f'{k} ×{n}' for k, n in kinds.items())}, the "
                       f"first {_ms(_since_fault(r, failed_after[0].t))} after the fault)")
    return True, (f"{victim} out of rotation from {_ms(det_ms)} (requests to it: {routed} "
                  f"after the fault, none after detection); re-admitted at "
                  f"{_ms(_since_fault(r, back.t))}, after it served again at "
                  f"{_ms(_since_fault(r, serving.t if serving else None))}; client outage "
                  f"{m.outage_ms:.0f} ms (+{m.outage_precision_ms:.0f} ms precision), "
                  f"{m.lost} requests lost")


def alarm_reported(r: Record, m: Measurement, sal: Sal) -> tuple:
    a = r.first("alarm", after=r.fault_at or 0.0)
    if a is None:
        return False, "no alarm: no component reported the failure (HAProxy logged no DOWN)"
    ms = _since_fault(r, a.t)
    ok = ms is not None and ms < sal.detection_ms
    return ok, (f"alarm {_ms(ms)} after the fault: \"{a.detail[:90]}\" "
                f"({sal.name} needs < {sal.detection_ms:.0f} ms)")


def cluster_recovers(r: Record, m: Measurement, sal: Sal) -> tuple:
    cm = str(r.facts.get("cluster_manager", "none"))
    victim = r.facts.get("victim", "the instance")
    after = r.fault_at or 0.0
    restarted = r.first("instance_restarted", after=after)
    back = r.first("instance_back", after=after)
    # "serving again": its own port answers (active/active) — else its role is back.
    serving = r.first("instance_serving", after=after) or back
    rec = (f"serving again at {_ms(_since_fault(r, serving.t if serving else None))}, "
           f"back in service ({back.detail if back else 'never'}) at "
           f"{_ms(_since_fault(r, back.t if back else None))}: "
           f"recovery {_ms(m.recovery_ms)} ({sal.name} needs ≤ {sal.recovery_ms:.0f} ms)")
    if cm in ("nfvha-supervisor", "none"):
        by = "" if restarted is None else (
            f"; {victim} was restarted by nfvha's stand-in supervisor "
            f"{_ms(_since_fault(r, restarted.t))} after the kill, {rec}")
        note = r.facts.get("cluster_manager_note")
        return False, "fail: no cluster manager" + (f" ({note})" if note else "") + by
    det = r.first("cm_detected", after=after)
    if restarted is None or serving is None:
        late = "" if restarted is None else \
            f"; restarted at {_ms(_since_fault(r, restarted.t))} but not serving by the end"
        return False, (f"{cm} did not bring {victim} back within the observation "
                       f"(failure seen by {cm}: {_ms(_since_fault(r, det.t if det else None))}"
                       f"{late})")
    how = (f"{cm} ({r.facts.get('cluster_monitor', '')}) saw the failed monitor at "
           f"{_ms(_since_fault(r, det.t if det else None))} and restarted {victim} at "
           f"{_ms(_since_fault(r, restarted.t))}")
    return sal.recovery_ok(m.recovery_ms), f"{how}; {rec}"


def failover(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.6: the backup took over the VIP and served the clients."""
    backup = r.facts.get("backup", "?")
    fo = r.first("failover", after=r.fault_at or 0.0)
    mst = r.first("backup_master", after=r.fault_at or 0.0)
    if fo is None:
        return False, f"the VIP never moved to node {backup} after the fault"
    served = [s for s in r.samples if s.probe == "http" and s.ok and s.t > fo.t
              and s.detail.endswith((f"node-{backup}", f"node {backup}"))]   # X-Served-By
    if not served:
        return False, (f"VIP on node {backup} at {_ms(_since_fault(r, fo.t))} but no client "
                       "request was served by it")
    ok = m.outage_ms + m.outage_precision_ms <= sal.recovery_ms
    return ok, (f"node {backup} became MASTER at {_ms(_since_fault(r, mst.t if mst else None))} "
                f"and holds the VIP from {_ms(_since_fault(r, fo.t))}; first request it served "
                f"at {_ms(_since_fault(r, served[0].t))}; client outage {m.outage_ms:.0f} ms "
                f"(+{m.outage_precision_ms:.0f} ms), {m.lost} requests failed "
                f"({sal.name} recovery ≤ {sal.recovery_ms:.0f} ms)")


def detection(r: Record, m: Measurement, sal: Sal, *, never: str, no_cm: str = "",
              sep: str = " ") -> tuple:
    """Req 5.4.7 where the first `detected` event after the fault is the
    detection and Pacemaker's failed monitor (`cm_detected`) is cited beside
    it: `never` is the why when nothing was detected, `no_cm` what is said
    when Pacemaker's monitor did not fail, `sep` stands between the event
    and the time."""
    det = r.first("detected", after=r.fault_at or 0.0)
    cm = r.first("cm_detected", after=r.fault_at or 0.0)
    also = no_cm if cm is None else \
        f"; Pacemaker's monitor failed at {_ms(_since_fault(r, cm.t))}"
    if det is None:
        return False, never + also
    return sal.detection_ok(m.detection_ms), (
        f"{det.detail}{sep}{_ms(m.detection_ms)} after the kill ({sal.name} needs < "
        f"{sal.detection_ms:.0f} ms){also}")


def cm_detects(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.7: the master's failure was seen (keepalived's track / Pacemaker's monitor)."""
    return detection(r, m, sal, never="the master never gave up the VIP or left MASTER")


def mq_subscribed(r: Record, m: Measurement, sal: Sal) -> tuple:
    """Req 5.4.10: redundant consumers subscribed; work goes on through a crash, nothing lost."""
    f = r.facts
    n = f.get("consumers")
    before = f.get("per_consumer_before_fault") or {}
    split = "/".join(f"{c} {k}" for c, k in before.items())
    if f.get("consumers_before_fault") != n:
        return False, (f"the broker saw {f.get('consumers_before_fault')} consumers before the "
                       f"fault, not {n}")
    idle = [c for c, k in before.items() if k == 0]
    if idle:
        return False, f"{', '.join(idle)} processed nothing before the fault ({split})"
    fault = r.fault_at or 0.0
    back = r.first("instance_back", after=fault)
    end = back.t if back else float("inf")
    during = [s for s in r.samples if s.probe == "mq" and fault <= s.t < end]
    served = sum(1 for s in during if s.ok)
    lost = int(f.get("lost_messages", 0) or 0)
    why = (f"{n} consumers subscribed (broker's count), baseline split {split}; "
           f"{served} of {len(during)} messages sent while {f.get('victim')} was down were "
           f"processed by the others; published {f.get('published')}, consumed "
           f"{f.get('consumed')}, lost {lost}, redelivered {f.get('redelivered')}, "
           f"duplicates {f.get('duplicates')}")
    return lost == 0 and (served > 0 or not during) and served == len(during), why


def _not_measured(kind: str) -> Check:
    def check(r: Record, m: Measurement, sal: Sal) -> tuple:
        return False, f"not measured: the {kind} scenario has no check for this yet"
    return check


CHECKS: Dict[str, Check] = {
    "lb_balances": lb_balances,
    "lb_detects": lb_detects,
    "lb_isolates": lb_isolates,
    "alarm_reported": alarm_reported,
    "cluster_recovers": cluster_recovers,
    "failover": failover,
    "cm_detects": cm_detects,
    "mq_subscribed": mq_subscribed,
}


def judge_each(model: Model, checks: Dict[str, Check], r: Record, m: Measurement,
               sal: Sal) -> List[Verdict]:
    """For a scenario that judges its own list: requirement id → its check."""
    out = []
    for rid, check in checks.items():
        model.requirements[rid]            # the model knows it (KeyError otherwise)
        ok, why = check(r, m, sal)
        out.append(Verdict(rid, "pass" if ok else "fail", why))
    return out


def judge(model: Model, scenario: str, r: Record, m: Measurement, sal: Sal,
          checks: Optional[Dict[str, Check]] = None) -> List[Verdict]:
    table = dict(CHECKS, **(checks or {}))
    out = []
    for req in model.for_scenario(scenario):
        ok, why = table[req.check](r, m, sal)
        out.append(Verdict(req.id, "pass" if ok else "fail", why))
    return out
