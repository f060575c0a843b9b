"""Token buckets: how much a guest may send, and how often we log about it."""
from __future__ import annotations

import asyncio


class TokenBucket:
    """`rate` tokens per second, at most `capacity` saved up.

    Time is passed in (monotonic seconds), so tests drive it with a fake clock.
    """

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take `amount` tokens if there are enough; False (nothing taken) if not."""
        if now > self.stamp:  # refill (inline: every message of every guest passes here)
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def charge(self, now: float, amount: float) -> float:
        """Take `amount` even into debt; returns seconds until the bucket is
        out of debt (0.0 if it is not in debt)."""
        if now > self.stamp:  # refill (inline: every read of every guest passes here)
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Every:
    """At most one 'yes' per `period` seconds; counts the 'no's in between."""

    __slots__ = ("period", "last", "suppressed")

    def __init__(self, period: float) -> None:
        self.period = period
        self.last = float("-inf")
        self.suppressed = 0

    def due(self, now: float) -> bool:
        if now - self.last >= self.period:
            self.last = now
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n


class ReadThrottle:
    """A guest's byte budget on one channel: past it, reading pauses (the
    guest's writes back up in QEMU) until the budget has refilled, so a
    flooding guest costs its neighbours a bounded amount of parsing."""

    def __init__(self, bytes_per_s: float, now: float, min_charge: int) -> None:
        self._bucket = TokenBucket(bytes_per_s, bytes_per_s, now)
        self._min_charge = min_charge  # a read costs at least this (byte-at-a-time guests)
        self._handle: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    @property
    def paused(self) -> bool:
        return self._handle is not None

    def charge(self, transport: asyncio.Transport | None, nbytes: int, now: float) -> bool:
        """Charges one read; True when this read paused the transport."""
        debt = self._bucket.charge(now, max(nbytes, self._min_charge))
        if debt <= 0 or transport is None or self.paused:
            return False
        transport.pause_reading()
        self._transport = transport
        self._handle = asyncio.get_running_loop().call_later(debt, self._resume)
        return True

    def cancel(self) -> None:
        """The channel closed or is closing: forget a pending resume."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._transport = None

    def _resume(self) -> None:
        transport, self._transport, self._handle = self._transport, None, None
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
