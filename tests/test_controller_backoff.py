"""Retry delays: exponential, capped, jittered within [d/2, d]."""
from __future__ import annotations

import pytest

from nfvha.controller.backoff import backoff_delay


@pytest.mark.parametrize("failures,low,high", [
    (1, 0.025, 0.05), (2, 0.05, 0.1), (3, 0.1, 0.2), (10, 12.8, 25.6), (11, 15.0, 30.0),
    (50, 15.0, 30.0), (100_000, 15.0, 30.0),
])
def test_delay_doubles_then_caps(failures, low, high):
    assert backoff_delay(failures, 0.05, 30.0, 0.0) == pytest.approx(low)
    assert backoff_delay(failures, 0.05, 30.0, 0.999999) == pytest.approx(high, rel=1e-5)


def test_jitter_spreads_retries():
    delays = {round(backoff_delay(4, 0.05, 30.0, r / 10), 6) for r in range(10)}
    assert len(delays) == 10
