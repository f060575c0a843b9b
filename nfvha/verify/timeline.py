"""What a scenario run records: probe samples and marked events.

Every time is `time.monotonic()` seconds. A sample's `t` is the middle of
its request (sent..answered): the state of the service it saw lies there,
and the half round trip is the error bar that `metrics` carries on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass(frozen=True)
class Sample:
    t: float                      # monotonic, middle of the request
    ok: bool
    latency_ms: float
    probe: str = "http"
    detail: str = ""              # served-by instance, or the error text


@dataclass(frozen=True)
class Event:
    t: float
    kind: str                     # fault | detected | alarm | instance_down | instance_back | ...
    detail: str = ""


@dataclass
class Record:
    scenario: str
    started: float
    samples: List[Sample] = field(default_factory=list)
    events: List[Event] = field(default_factory=list)
    facts: Dict[str, object] = field(default_factory=dict)   # deployment facts for verdicts
    ended: Optional[float] = None

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def mark(self, kind: str, t: float, detail: str = "") -> None:
        self.events.append(Event(t, kind, detail))

    def first(self, kind: str, after: float = float("-inf")) -> Optional[Event]:
        for e in sorted(self.events, key=lambda e: e.t):
            if e.kind == kind and e.t >= after:
                return e
        return None

    def all(self, kind: str) -> List[Event]:
        return sorted((e for e in self.events if e.kind == kind), key=lambda e: e.t)

    @property
    def fault_at(self) -> Optional[float]:
        e = self.first("fault")
        return e.t if e else None
