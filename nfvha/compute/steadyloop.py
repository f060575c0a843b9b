"""The steady sessions of an event loop, run by the C engine (compute/_steadyio.c).

A heartbeat session whose machine is in the steady state (compute/steady.py)
is put on the loop's engine with its socket; from then on its challenges go
out and its answers come in without a line of Python per cycle: the engine
fires its timer (one wake-up of the loop's timer wheel for all of them) and
reads its socket in the loop's epoll pass (compute/guestio.py asks the engine
to poll). When the engine meets anything else it hands the session back
(``off_engine`` from the read pass, ``engine_handback`` from a timer pass)
with what it met, and the session's Python code goes on from there.

Sessions on the engine must be served by the loop's ``GuestIO`` (the engine
reads their sockets in its pass) and have nothing buffered to write (the
engine's challenge must not overtake it).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from typing import Any, Protocol

from nfvha.compute import guestio, steady, timers

LOG = logging.getLogger(__name__)


class EngineSession(Protocol):
    """What the engine hands back to."""

    def engine_handback(self, kind: int, payload: Any) -> None: ...


# what fire() hands back with (compute/_steadyio.c): the Python machine's tick,
# bytes the socket did not take, an exception, bytes read (b"": end of stream)
TICK, WRITE, ERROR, READ = 0, 1, 2, 3


class SteadyLoop:
    """The engine of one event loop and its one timer on the loop's wheel."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_size: int) -> None:
        assert steady._steady is not None
        self.engine: Any = steady._steady.Engine(read_size)
        self._timers = timers.for_loop(loop)
        self._timer: timers.Timer | None = None
        self._timer_at = math.inf
        guestio.for_loop(loop).engine = self.engine

    def __len__(self) -> int:
        return len(self.engine)

    def add(self, session: Any, fast: Any, fd: int) -> None:
        """Serve ``session`` (its machine on the C path as ``fast``) on the engine."""
        self.engine.add(fast, fd, session, session.counters, session.rtt_ms.append,
                        session.late_ms.append)
        self._wake()

    def discard(self, fast: Any) -> bool:
        """Off the engine (False: it was not on it, e.g. handed back already)."""
        return bool(self.engine.discard(fast))

    def _wake(self) -> None:
        at = self.engine.next_at
        if at is None or at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._timers.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        try:
            for session, kind, payload in self.engine.fire(time.monotonic()):
                try:
                    session.engine_handback(kind, payload)
                except Exception:  # one session's failure is its own
                    LOG.exception("handing session %r back from the engine", session)
        finally:
            self._wake()  # whatever happened, the other sessions' timers go on


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SteadyLoop] = \
    weakref.WeakKeyDictionary()


def for_loop(read_size: int, loop: asyncio.AbstractEventLoop | None = None) -> SteadyLoop:
    """The one ``SteadyLoop`` of ``loop`` (default: the running loop)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    sl = _PER_LOOP.get(loop)
    if sl is None:
        sl = _PER_LOOP[loop] = SteadyLoop(loop, read_size)
    return sl
