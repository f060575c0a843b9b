"""Metrics computed from a run's record — pure functions, no clock, no I/O.

Definitions (OpenStack reliability test plan v2 and Yardstick, made exact):

- outage: first failed to last failed sample after the fault. The true
  outage started somewhere after the last good sample before it and ended
  before the next good sample, so `precision_ms` = both gaps added: the true
  value lies in [outage_ms, outage_ms + precision_ms]. No failed sample →
  outage 0 and precision = the largest sampling gap after the fault (an
  outage shorter than that could have slipped between two samples).
- detection: fault → first "detected" event (the LB/cluster manager marked
  the instance failed).
- recovery: fault → the later of (a) the sliding-window (100 ms, or three
  median sampling gaps if longer) mean latency is back
  within k × baseline (+ a small absolute slack, so a 1 ms baseline on a
  loaded machine does not turn noise into "not recovered") and (b) the
  failed instance is back in service ("instance_back" event), when the
  scenario needs (b).
- degradation: mean latency from fault to recovery vs baseline.
- lost: failed requests after the fault.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import mean, median
from typing import List, Optional, Sequence

from .timeline import Record, Sample


@dataclass(frozen=True)
class Outage:
    ms: float
    precision_ms: float
    first_fail: Optional[float]
    last_fail: Optional[float]
    failed: int


@dataclass(frozen=True)
class Measurement:
    detection_ms: Optional[float]
    outage_ms: float
    outage_precision_ms: float
    recovery_ms: Optional[float]
    service_recovery_ms: Optional[float]
    lost: int
    baseline_ms: Optional[float]
    degradation_ms: Optional[float]
    degradation_pct: Optional[float]
    max_gap_ms: float
    median_gap_ms: float
    samples: int


def outage(samples: Sequence[Sample], after: float) -> Outage:
    s = sorted(samples, key=lambda x: x.t)
    fails = [i for i, x in enumerate(s) if not x.ok and x.t >= after]
    if not fails:
        gaps = [b.t - a.t for a, b in zip(s, s[1:]) if b.t >= after]
        return Outage(0.0, 1000.0 * max(gaps, default=0.0), None, None, 0)
    i, j = fails[0], fails[-1]
    before = s[i].t - s[i - 1].t if i > 0 else 0.0
    after_gap = s[j + 1].t - s[j].t if j + 1 < len(s) else 0.0
    return Outage(
        ms=1000.0 * (s[j].t - s[i].t),
        precision_ms=1000.0 * (before + after_gap),
        first_fail=s[i].t,
        last_fail=s[j].t,
        failed=len(fails),
    )


def baseline_latency(samples: Sequence[Sample], before: float) -> Optional[float]:
    lat = [x.latency_ms for x in samples if x.ok and x.t < before]
    return mean(lat) if lat else None


def service_recovered_at(
    samples: Sequence[Sample],
    fault_at: float,
    baseline_ms: float,
    *,
    k: float = 2.0,
    slack_ms: float = 2.0,
    window_s: float = 0.1,
    fail_latency_ms: float = 1000.0,
) -> Optional[float]:
    """End time of the first window after the last failure whose mean latency
    is within k × baseline + slack; None if it never comes back."""
    s = sorted((x for x in samples if x.t >= fault_at), key=lambda x: x.t)
    if not s:
        return None
    last_fail = max((x.t for x in s if not x.ok), default=fault_at)
    limit = k * baseline_ms + slack_ms
    lat: List[float] = []
    times: List[float] = []
    lo = 0
    for x in s:
        times.append(x.t)
        lat.append(x.latency_ms if x.ok else max(fail_latency_ms, x.latency_ms))
        while times[lo] < x.t - window_s:
            lo += 1
        # A window must span (almost) its full width to be judged.
        if x.t <= last_fail or x.t - times[lo] < 0.8 * window_s:
            continue
        if mean(lat[lo:]) <= limit:
            return x.t
    return None


def gaps_ms(samples: Sequence[Sample]) -> List[float]:
    s = sorted(x.t for x in samples)
    return [1000.0 * (b - a) for a, b in zip(s, s[1:])]


def measure(record: Record, *, probe: str = "http", need_instance_back: bool = True) -> Measurement:
    fault = record.fault_at
    samples = [x for x in record.samples if x.probe == probe]
    g = gaps_ms(samples)
    if fault is None:
        raise ValueError("record has no fault event")
    det = record.first("detected", after=fault)
    out = outage(samples, fault)
    base = baseline_latency(samples, fault)
    # A window must hold a few samples: 100 ms, or three median gaps where a
    # request takes longer than that (a Keystone token: 0.1-1 s on a busy machine)
    window = max(0.1, 3 * median(g) / 1000.0) if g else 0.1
    svc_at = service_recovered_at(samples, fault, base, window_s=window) \
        if base is not None else None
    back = record.first("instance_back", after=fault)
    if svc_at is None or (need_instance_back and back is None):
        rec_at = None
    else:
        rec_at = max(svc_at, back.t) if (need_instance_back and back) else svc_at
    deg_ms = deg_pct = None
    if base is not None:
        end = rec_at if rec_at is not None else (record.ended or float("inf"))
        window = [x.latency_ms for x in samples if x.ok and fault <= x.t <= end]
        if window:
            deg_ms = mean(window) - base
            deg_pct = 100.0 * deg_ms / base if base > 0 else None
    return Measurement(
        detection_ms=None if det is None else 1000.0 * (det.t - fault),
        outage_ms=out.ms,
        outage_precision_ms=out.precision_ms,
        recovery_ms=None if rec_at is None else 1000.0 * (rec_at - fault),
        service_recovery_ms=None if svc_at is None else 1000.0 * (svc_at - fault),
        lost=out.failed,
        baseline_ms=base,
        degradation_ms=deg_ms,
        degradation_pct=deg_pct,
        max_gap_ms=max(g, default=0.0),
        median_gap_ms=median(g) if g else 0.0,
        samples=len(samples),
    )
