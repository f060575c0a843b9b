"""Retry delays: exponential backoff with "equal jitter" (half fixed, half
random), so many deliveries failing together do not retry in lockstep."""
from __future__ import annotations


def backoff_delay(failures: int, base_s: float, max_s: float, rand: float) -> float:
    """Delay before the next attempt after ``failures`` failed attempts (>= 1).

    ``rand`` is a uniform number in [0, 1); the result lies in [d/2, d] with
    d = min(max_s, base_s * 2**(failures-1))."""
    exp = min(max(failures - 1, 0), 62)  # no float overflow after many failures
    d = min(max_s, base_s * (2.0 ** exp))
    return d / 2 + (d / 2) * rand
