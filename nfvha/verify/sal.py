"""Service availability levels (ETSI GS NFV-REL 001, seed Table 1).

Recovery bounds are the upper end of each range (SAL1 "5-6 s" → 6 s): the
seed gives a range, and a verdict must not fail a system that meets it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Sal:
    name: str
    detection_ms: float      # strictly below
    recovery_ms: float       # at most

    def detection_ok(self, ms: Optional[float]) -> bool:
        return ms is not None and ms < self.detection_ms

    def recovery_ok(self, ms: Optional[float]) -> bool:
        return ms is not None and ms <= self.recovery_ms


SALS = {
    "SAL1": Sal("SAL1", 1000.0, 6000.0),
    "SAL2": Sal("SAL2", 5000.0, 15000.0),
    "SAL3": Sal("SAL3", 10000.0, 25000.0),
}


def get(name: str) -> Sal:
    try:
        return SALS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown SAL {name!r}; one of {', '.join(SALS)}") from None


def reached(detection_ms: Optional[float], recovery_ms: Optional[float]) -> Optional[str]:
    """The best level whose both bounds hold, or None."""
    for sal in SALS.values():
        if sal.detection_ok(detection_ms) and sal.recovery_ok(recovery_ms):
            return sal.name
    return None
