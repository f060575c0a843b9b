"""A flooding guest's reads pause until its byte budget refills, then resume."""
from __future__ import annotations

import asyncio

from nfvha.compute.ratelimit import ReadThrottle


class FakeTransport:
    def __init__(self) -> None:
        self.paused = False
        self.closing = False
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.paused = False
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return self.closing


async def test_over_budget_pauses_once_and_resumes_when_refilled() -> None:
    t = FakeTransport()
    throttle = ReadThrottle(bytes_per_s=1000, now=0.0, min_charge=64)
    assert throttle.charge(t, 900, now=0.0) is False  # within budget
    assert throttle.charge(t, 200, now=0.0) is True  # 100 bytes of debt: 0.1 s
    assert t.paused and throttle.paused
    assert throttle.charge(t, 50, now=0.0) is False  # already paused: no second pause
    await asyncio.sleep(0.25)
    assert t.calls == ["pause", "resume"] and not throttle.paused


async def test_byte_at_a_time_reads_cost_the_minimum_charge() -> None:
    t = FakeTransport()
    throttle = ReadThrottle(bytes_per_s=640, now=0.0, min_charge=64)
    paused = [throttle.charge(t, 1, now=0.0) for _ in range(11)]
    assert paused.index(True) == 10  # 10 reads of 1 byte use up 640 bytes of budget


async def test_cancel_forgets_the_resume_of_a_closed_channel() -> None:
    t = FakeTransport()
    throttle = ReadThrottle(bytes_per_s=100, now=0.0, min_charge=1)
    assert throttle.charge(t, 110, now=0.0)
    throttle.cancel()
    await asyncio.sleep(0.15)
    assert t.calls == ["pause"] and not throttle.paused


async def test_no_resume_on_a_transport_that_is_closing() -> None:
    t = FakeTransport()
    throttle = ReadThrottle(bytes_per_s=100, now=0.0, min_charge=1)
    assert throttle.charge(t, 105, now=0.0)
    t.closing = True
    await asyncio.sleep(0.1)
    assert t.calls == ["pause"]
