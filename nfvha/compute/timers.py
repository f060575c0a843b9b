"""One timer structure for every session of an event loop.

A thousand heartbeat sessions at 100 ms re-arm a deadline about twenty
thousand times a second. One asyncio ``TimerHandle`` each (``call_at``,
``cancel``) costs an object, a heap push into the loop's own heap and a
cancelled handle left there per re-arm, and one loop turn per due session.
Here the sessions share one list per granule of ``granularity`` seconds
(a timing wheel; a cancelled entry stays in its list, skipped, until the
granule fires or the lists are compacted) and the loop holds one handle: it
wakes at the end of the earliest granule holding entries and fires every
entry due by then in one pass. Rounding up costs an entry at most
``granularity`` of lateness; it buys one wake-up for the ~20 sessions due
within each granule of 2 ms at 1000 guests (with the C steady path a
wake-up, not a session, is most of what a heartbeat costs: 1 ms granules
cost the agent a few % of a core more for ~1 ms less lateness).

Times are ``time.monotonic()`` seconds (what the host machine's deadlines
are in), whatever clock the loop keeps.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

GRANULARITY = 0.002  # seconds: the most a due entry waits for its batch


def _NO_HANDLE() -> None:
    return None


class Timer:
    """One scheduled call; ``cancel()`` is O(1) (the entry is skipped when its slot fires)."""

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
    """Slots of ``Timer`` entries, one per granule, driven by one loop callback.

    An entry goes into the list of the granule its time falls in (slot k
    holds ((k-1)g, kg], and fires at kg): scheduling is a dict lookup and an
    append, not a heap push; a heap holds only the slot numbers (one push per
    granule that gets entries, ~1000 a second instead of ~20,000 at 1000
    sessions). A slot fires in scheduling order.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 granularity: float = GRANULARITY) -> None:
        if granularity <= 0:
            raise ValueError("granularity must be positive")
        # weakly: for_loop's table keys on the loop, which must be free to go
        self._loop = weakref.ref(loop)
        self.granularity = granularity
        self._slots: dict[int, list[Timer]] = {}
        self._order: list[int] = []  # heap of the keys of _slots
        self._stored = 0  # entries in the slots, cancelled ones included
        self._cancelled = 0  # cancelled entries still in a slot
        # The loop's handle, weakly where the loop's handles allow it (the
        # loop holds it while scheduled): a strong one would keep the loop
        # alive through for_loop's table after it closed.
        self._handle: Callable[[], asyncio.TimerHandle | None] = _NO_HANDLE
        self._wake_at = math.inf  # when the loop's handle fires
        self._running = False  # in _run: its counts of cancelled entries must hold
        self.counters = {"wakeups": 0, "fired": 0, "compactions": 0}

    def __len__(self) -> int:
        """Live (not cancelled) entries."""
        return self._stored - self._cancelled

    @property
    def stored(self) -> int:
        """Entries kept, cancelled ones included (they go when their slot fires)."""
        return self._stored

    def call_at(self, at: float, callback: Callable[[], Any]) -> Timer:
        """``callback()`` at ``at`` (monotonic seconds) or within ``granularity`` after."""
        timer = Timer(at, callback, self)
        g = self.granularity
        key = math.ceil(at / g)
        if key * g < at:  # at/g rounded down to a whole number: the slot ends before `at`
            key += 1
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = [timer]
            heapq.heappush(self._order, key)
            if key * g < self._wake_at:
                self._wake(key)
        else:
            slot.append(timer)
        self._stored += 1
        if not self._running and self._crowded():
            self._compact()
        return timer

    def _crowded(self) -> bool:
        # more than half of what is stored is cancelled (and enough to be worth it)
        return self._cancelled > 64 and self._cancelled > self._stored // 2

    def _compact(self) -> None:
        # Cancelled entries wait for their slot, up to an interval away (60 s
        # at most); a session re-arming often must not pile them up.
        for key in list(self._slots):
            live = [t for t in self._slots[key] if t.callback is not None]
            if live:
                self._slots[key] = live
            else:
                del self._slots[key]
        self._order = list(self._slots)
        heapq.heapify(self._order)
        self._stored -= self._cancelled
        self._cancelled = 0
        self.counters["compactions"] += 1

    def _wake(self, key: int) -> None:
        # the end of the granule `key`: entries due close together share a wake-up
        wake = key * self.granularity
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
        slots, order = self._slots, self._order
        limit = time.monotonic()
        g = self.granularity
        # Take every due slot out first: entries the callbacks schedule go into
        # new lists and wait for the next pass (a callback that re-arms in the
        # past cannot keep this pass going).
        due: list[list[Timer]] = []
        while order and order[0] * g <= limit:
            due.append(slots.pop(heapq.heappop(order)))
        if order and (order[0] - 1) * g < limit:
            # the loop woke inside the next granule (early): its entries that
            # are due already go now, the others stay
            key = order[0]
            slot = slots[key]
            partial = [t for t in slot if t.at <= limit]
            if partial:
                rest = [t for t in slot if t.at > limit]
                if rest:
                    slots[key] = rest
                else:
                    del slots[key]
                    heapq.heappop(order)
                due.append(partial)
        fired = 0
        self._running = True
        try:
            for slot in due:
                self._stored -= len(slot)
                for timer in slot:
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
        if self._crowded():
            self._compact()
            order = self._order
        if order:
            self._wake(order[0])


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
