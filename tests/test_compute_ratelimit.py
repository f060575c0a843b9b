"""Token buckets with a fake clock."""
from __future__ import annotations

import pytest

from nfvha.compute.ratelimit import Every, TokenBucket


def test_bucket_allows_burst_then_rate() -> None:
    b = TokenBucket(rate=10, capacity=10, now=0.0)
    assert sum(b.take(0.0) for _ in range(20)) == 10
    assert not b.take(0.05)  # half a token
    assert b.take(0.1)  # one token after 100 ms
    assert not b.take(0.1)
    assert sum(b.take(100.0) for _ in range(50)) == 10  # never more than capacity


def test_bucket_clock_going_backwards_gives_nothing_extra() -> None:
    b = TokenBucket(rate=1, capacity=1, now=10.0)
    assert b.take(10.0)
    assert not b.take(5.0)


def test_charge_reports_time_until_out_of_debt() -> None:
    b = TokenBucket(rate=1000, capacity=1000, now=0.0)
    assert b.charge(0.0, 500) == 0.0
    assert b.charge(0.0, 1500) == pytest.approx(1.0)
    assert b.charge(1.0, 0) == 0.0


def test_every_says_yes_once_per_period_and_counts_the_rest() -> None:
    e = Every(1.0)
    assert e.due(0.0)
    assert not e.due(0.5) and not e.due(0.9)
    assert e.take_suppressed() == 2
    assert e.due(1.0)
    assert e.take_suppressed() == 0


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, capacity=1, now=0.0)
