"""One timer structure for every session of an event loop.

A thousand heartbeat sessions at 100 ms re-arm a deadline about twenty
thousand times a second. One asyncio ``TimerHandle`` each (``call_at``,
``cancel``) costs an object, a heap push into the loop's own heap and a
cancelled handle left there per re-arm, and one loop turn per due session.
Here the sessions share one heap with lazy deletion (a cancelled entry stays
until it surfaces or the heap is compacted) and the loop holds one handle:
it wakes at the earliest due time, rounded up to ``granularity`` seconds,
and fires every entry due by then in one pass. Rounding up costs an entry at
most ``granularity`` of lateness; it buys one wake-up for the ~10 sessions
due within each millisecond.

Times are ``time.monotonic()`` seconds (what the host machine's deadlines
are in), whatever clock the loop keeps.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

GRANULARITY = 0.001  # seconds: the most a due entry waits for its batch


def _NO_HANDLE() -> None:
    return None


class Timer:
    """One scheduled call; ``cancel()`` is O(1) (the entry is skipped when it surfaces)."""

    __slots__ = ("at", "callback", "_owner")

    def __init__(self, at: float, callback: Callable[[], Any], owner: Timers) -> None:
        self.at = at
        self.callback: Callable[[], Any] | None = callback
        self._owner = owner

    @property
    def cancelled(self) -> bool:
        return self.callback is None

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self._owner._cancelled += 1


class Timers:
    """A heap of ``Timer`` entries driven by one loop callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 granularity: float = GRANULARITY) -> None:
        if granularity <= 0:
            raise ValueError("granularity must be positive")
        # weakly: for_loop's table keys on the loop, which must be free to go
        self._loop = weakref.ref(loop)
        self.granularity = granularity
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()  # ties fire in scheduling order
        self._cancelled = 0  # cancelled entries still in the heap
        # The loop's handle, weakly where the loop's handles allow it (the
        # loop holds it while scheduled): a strong one would keep the loop
        # alive through for_loop's table after it closed.
        self._handle: Callable[[], asyncio.TimerHandle | None] = _NO_HANDLE
        self._wake_at = math.inf  # when the loop's handle fires
        self._running = False  # in _run: the heap must stay the list it iterates
        self.counters = {"wakeups": 0, "fired": 0, "compactions": 0}

    def __len__(self) -> int:
        """Live (not cancelled) entries."""
        return len(self._heap) - self._cancelled

    def call_at(self, at: float, callback: Callable[[], Any]) -> Timer:
        """``callback()`` at ``at`` (monotonic seconds) or within ``granularity`` after."""
        timer = Timer(at, callback, self)
        heapq.heappush(self._heap, (at, next(self._seq), timer))
        if at < self._wake_at:
            self._wake(at)
        elif not self._running and self._cancelled > 64 \
                and self._cancelled > len(self._heap) // 2:
            self._compact()
        return timer

    def _compact(self) -> None:
        # Lazy deletion leaves one dead entry per re-arm; keep the heap at most
        # about twice its live size.
        self._heap = [e for e in self._heap if e[2].callback is not None]
        heapq.heapify(self._heap)
        self._cancelled = 0
        self.counters["compactions"] += 1

    def _wake(self, at: float) -> None:
        # the end of the granule holding `at`: entries due close together share a wake-up
        g = self.granularity
        wake = math.ceil(at / g) * g
        if wake >= self._wake_at:
            return
        handle = self._handle()
        if handle is not None:
            handle.cancel()
        loop = self._loop()
        if loop is None:  # the loop is gone: nothing will run these any more
            return
        self._wake_at = wake
        handle = loop.call_later(max(0.0, wake - time.monotonic()), self._run)
        try:
            self._handle = weakref.ref(handle)
        except TypeError:  # a loop whose handles take no weak reference
            self._handle = lambda: handle

    def _run(self) -> None:
        self._handle = _NO_HANDLE
        self._wake_at = math.inf
        self.counters["wakeups"] += 1
        heap = self._heap
        pop = heapq.heappop
        limit = time.monotonic()
        # entries scheduled by the callbacks of this pass wait for the next one:
        # a callback that re-arms in the past cannot keep this pass going
        first_new = next(self._seq)
        fired = 0
        self._running = True
        try:
            while heap and heap[0][0] <= limit and heap[0][1] < first_new:
                timer = pop(heap)[2]
                callback = timer.callback
                if callback is None:
                    self._cancelled -= 1
                    continue
                timer.callback = None
                fired += 1
                try:
                    callback()
                except Exception:  # one session's bug must not stop the others' timers
                    LOG.exception("timer callback %r failed", callback)
        finally:
            self._running = False
        self.counters["fired"] += fired
        while heap and heap[0][2].callback is None:
            pop(heap)
            self._cancelled -= 1
        if self._cancelled > 64 and self._cancelled > len(heap) // 2:
            self._compact()
            heap = self._heap
        if heap:
            self._wake(heap[0][0])


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Timers] = \
    weakref.WeakKeyDictionary()


def for_loop(loop: asyncio.AbstractEventLoop | None = None) -> Timers:
    """The one ``Timers`` of ``loop`` (default: the running loop)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    timers = _PER_LOOP.get(loop)
    if timers is None:
        timers = _PER_LOOP[loop] = Timers(loop)
    return timers
