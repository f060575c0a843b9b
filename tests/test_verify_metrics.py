"""Metrics and SAL levels on synthetic records (no clock, no I/O)."""
from __future__ import annotations

import pytest

from nfvha.verify import metrics, sal
from nfvha.verify.timeline import Record, Sample


def record(pattern: str, step: float = 0.005, lat: float = 1.0, fault_at: float = 1.0,
           slow: tuple = ()) -> Record:
    """One sample per character every `step` s from t=0: '.' ok, 'x' failed.
    `slow` = (from_index, to_index, latency) makes ok samples slow there."""
    r = Record("t", 0.0)
    for i, c in enumerate(pattern):
        la = lat
        if slow and slow[0] <= i < slow[1]:
            la = slow[2]
        r.add(Sample(i * step, c == ".", la if c == "." else 50.0))
    r.mark("fault", fault_at)
    return r


def test_outage_is_first_to_last_failure_with_both_gaps_as_precision():
    r = record("." * 200 + "x" * 60 + "." * 100)          # fails at 1.000 .. 1.295
    o = metrics.outage(r.samples, after=1.0)
    assert o.failed == 60
    assert o.ms == pytest.approx(295.0)
    assert o.precision_ms == pytest.approx(10.0)           # 5 ms before + 5 ms after
    assert o.first_fail == pytest.approx(1.0) and o.last_fail == pytest.approx(1.295)


def test_uneven_sampling_widens_the_precision():
    r = Record("t", 0.0)
    for t, ok in [(0.0, True), (0.9, True), (1.02, False), (1.1, False), (1.4, True)]:
        r.add(Sample(t, ok, 1.0))
    o = metrics.outage(r.samples, after=0.95)
    assert o.ms == pytest.approx(80.0)
    assert o.precision_ms == pytest.approx(120.0 + 300.0)


def test_failures_before_the_fault_are_not_the_outage():
    r = record("." * 10 + "x" * 5 + "." * 300)
    o = metrics.outage(r.samples, after=1.0)
    assert o.failed == 0 and o.ms == 0.0
    # No failure seen: the precision is the largest gap an outage could hide in.
    assert o.precision_ms == pytest.approx(5.0)


def test_measure_detection_recovery_degradation_and_lost():
    r = record("." * 200 + "x" * 20 + "." * 300, slow=(220, 260, 9.0))
    r.mark("detected", 1.150)
    r.mark("instance_back", 2.0)
    m = metrics.measure(r)
    assert m.detection_ms == pytest.approx(150.0)
    assert m.lost == 20
    assert m.outage_ms == pytest.approx(95.0)
    assert m.baseline_ms == pytest.approx(1.0)
    # Latency is back within 2x1 + 2 = 4 ms once the 100 ms window's mean is:
    # slow (9 ms) samples end at 1.300 s, so the window holds <= 3/8 of them
    # from 1.3625 s on; the next sample is at 1.365 s. That is before the
    # instance is back, so recovery is the instance's return.
    assert m.service_recovery_ms == pytest.approx(365.0)
    assert m.recovery_ms == pytest.approx(1000.0)
    assert m.degradation_ms > 0 and m.degradation_pct > 0
    assert m.median_gap_ms == pytest.approx(5.0)


def test_no_recovery_when_the_instance_never_comes_back():
    r = record("." * 200 + "x" * 20 + "." * 100)
    m = metrics.measure(r)
    assert m.recovery_ms is None and m.service_recovery_ms is not None
    assert metrics.measure(r, need_instance_back=False).recovery_ms == m.service_recovery_ms


def test_latency_that_never_returns_to_baseline_is_not_recovered():
    r = record("." * 200 + "." * 300, slow=(200, 500, 20.0))
    r.mark("instance_back", 1.1)
    assert metrics.measure(r).recovery_ms is None


def test_a_record_without_fault_is_an_error():
    r = Record("t", 0.0)
    r.add(Sample(0.0, True, 1.0))
    with pytest.raises(ValueError):
        metrics.measure(r)


@pytest.mark.parametrize("det,rec,level", [
    (999, 6000, "SAL1"), (1000, 6000, "SAL2"), (999, 6001, "SAL2"), (4999, 15000, "SAL2"),
    (9999, 25000, "SAL3"), (10000, 100, None), (100, None, None), (None, 100, None),
])
def test_sal_reached_uses_strict_detection_and_inclusive_upper_recovery(det, rec, level):
    assert sal.reached(det, rec) == level


def test_unknown_sal_is_a_clear_error():
    assert sal.get("sal2").name == "SAL2"
    with pytest.raises(ValueError, match="unknown SAL"):
        sal.get("SAL9")
