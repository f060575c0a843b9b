"""Log lines about guests the host starves of CPU, summarised.

A saturated host starves hundreds of guests within the same second (and
frees them together): a WARNING per guest and per change buried the log
under thousands of lines that all said one thing, the host is overloaded.
Here the first change of each period is logged with its guest and detail;
the others of the period are counted and said in one line when the period
ends. Nothing is dropped from what matters: every change is still counted
(agent counters, metrics) and the starved guests are listed by
``ComputeAgent.starved()`` / ``nfvha status``.

Sans-I/O: ``record``/``flush`` take the time and return the lines to log;
the agent logs them and calls ``flush`` at ``flush_at``.
"""
from __future__ import annotations

from typing import Callable, Optional


class StarvedLog:
    def __init__(self, period_s: float = 1.0) -> None:
        self.period_s = period_s
        self._opened = float("-inf")  # when the current period's first line went out
        self._started = 0  # changes counted (not logged) in this period
        self._ended = 0

    @property
    def flush_at(self) -> Optional[float]:
        """When the counted changes are due to be said (None: nothing counted)."""
        if not (self._started or self._ended):
            return None
        return self._opened + self.period_s

    def record(self, uuid: str, active: bool, detail: str, now: float,
               starved_now: Callable[[], int]) -> list[str]:
        """``starved_now()``: how many guests are starved now (asked only
        when a summary goes out)."""
        if now - self._opened >= self.period_s:
            lines = self.flush(now, starved_now)
            self._opened = now
            return [*lines, f"instance {uuid}: "
                    f"{'starved of CPU' if active else 'no longer starved'}: {detail}"]
        if active:
            self._started += 1
        else:
            self._ended += 1
        return []

    def flush(self, now: float, starved_now: Callable[[], int]) -> list[str]:
        """The line summing up the changes counted so far, if any."""
        if not (self._started or self._ended):
            return []
        parts = []
        if self._started:
            parts.append(f"{self._started} more guests starved of CPU")
        if self._ended:
            parts.append(f"{self._ended} more no longer starved")
        since = max(0.0, now - self._opened)
        self._started = self._ended = 0
        return [f"{' and '.join(parts)} in the last {since:.1f} s "
                f"({starved_now()} starved now: the host is short of CPU)"]
