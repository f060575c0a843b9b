"""A saturated host starves many guests at once: the compute agent logs one
line per period naming a guest and one summing up the rest, not a line per
guest (compute/starvedlog.py)."""
from __future__ import annotations

from nfvha.compute.starvedlog import StarvedLog


def test_a_thousand_guests_starved_in_one_second_make_two_lines() -> None:
    log = StarvedLog(period_s=1.0)
    lines: list[str] = []
    for i in range(1000):
        lines += log.record(f"vm-{i}", True, "extended 3 times", 10.0 + i * 0.0005,
                            lambda: 1000)
    assert lines == ["instance vm-0: starved of CPU: extended 3 times"]
    assert log.flush_at == 11.0
    lines += log.flush(11.0, lambda: 1000)
    assert len(lines) == 2
    assert lines[1].startswith("999 more guests starved of CPU in the last 1.0 s")
    assert "1000 starved now" in lines[1]
    assert log.flush_at is None and log.flush(12.0, lambda: 1000) == []


def test_starts_and_ends_are_counted_apart_and_a_new_period_names_a_guest_again() -> None:
    log = StarvedLog(period_s=1.0)
    assert log.record("a", True, "d", 0.0, lambda: 1) == ["instance a: starved of CPU: d"]
    assert log.record("b", True, "d", 0.1, lambda: 2) == []
    assert log.record("a", False, "10 on time", 0.2, lambda: 1) == []
    assert log.record("c", False, "10 on time", 0.3, lambda: 0) == []
    # the next change after the period: the summary of the last one, then itself
    out = log.record("b", False, "10 on time", 1.5, lambda: 0)
    assert out == ["1 more guests starved of CPU and 2 more no longer starved in the last "
                   "1.5 s (0 starved now: the host is short of CPU)",
                   "instance b: no longer starved: 10 on time"]
    assert log.flush_at is None


def test_one_guest_now_and_then_is_logged_every_time() -> None:
    log = StarvedLog(period_s=1.0)
    for t in range(5):
        assert len(log.record("a", t % 2 == 0, "d", 2.0 * t, lambda: 1)) == 1
