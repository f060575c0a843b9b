"""compute/timers.py: one timing wheel and one loop handle for every session's deadline."""
from __future__ import annotations

import asyncio
import time

from nfvha.compute import timers


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


async def test_timers_fire_in_deadline_order_never_before_their_time() -> None:
    t = timers.Timers(asyncio.get_running_loop())
    fired: list[tuple[str, float]] = []
    now = time.monotonic()
    for name, dt in (("c", 0.030), ("a", 0.010), ("b", 0.020)):
        t.call_at(now + dt, lambda name=name: fired.append((name, time.monotonic())))
    await _sleep_until(now + 0.5)
    assert [n for n, _ in fired] == ["a", "b", "c"]
    for (_, at), dt in zip(fired, (0.010, 0.020, 0.030)):
        assert at >= now + dt
    assert len(t) == 0


async def test_a_cancelled_timer_never_fires_and_is_dropped() -> None:
    t = timers.Timers(asyncio.get_running_loop())
    fired: list[int] = []
    now = time.monotonic()
    keep = t.call_at(now + 0.02, lambda: fired.append(1))
    gone = t.call_at(now + 0.01, lambda: fired.append(2))
    gone.cancel()
    gone.cancel()  # twice is once
    assert gone.cancelled and not keep.cancelled and len(t) == 1
    await _sleep_until(now + 0.3)
    assert fired == [1]
    assert t.stored == 0 and t._cancelled == 0


async def test_timers_due_within_one_granule_share_one_wakeup() -> None:
    t = timers.Timers(asyncio.get_running_loop(), granularity=0.010)
    fired: list[float] = []
    base = time.monotonic() + 0.05
    start = (int(base / 0.010) + 1) * 0.010  # a granule boundary
    for i in range(10):  # ten entries inside one 10 ms granule
        t.call_at(start + 0.0005 + i * 0.0009, lambda: fired.append(time.monotonic()))
    await _sleep_until(start + 0.3)
    assert len(fired) == 10
    assert t.counters["wakeups"] == 1 and t.counters["fired"] == 10


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    t = timers.Timers(asyncio.get_running_loop())
    fired: list[str] = []
    now = time.monotonic()

    def boom() -> None:
        raise RuntimeError("a session's bug")

    t.call_at(now + 0.005, boom)
    t.call_at(now + 0.005, lambda: fired.append("after"))
    t.call_at(now + 0.040, lambda: fired.append("later"))
    await _sleep_until(now + 0.3)
    assert fired == ["after", "later"]


async def test_a_callback_rearming_in_the_past_runs_on_the_next_turn_not_forever() -> None:
    loop = asyncio.get_running_loop()
    t = timers.Timers(loop)
    runs: list[int] = []
    other: list[int] = []

    def again() -> None:
        runs.append(1)
        if len(runs) < 50:
            t.call_at(time.monotonic() - 1.0, again)  # due already

    t.call_at(time.monotonic(), again)
    loop.call_soon(lambda: other.append(len(runs)))  # the loop still turns in between
    await asyncio.sleep(0.3)
    assert len(runs) == 50
    assert other and other[0] < 50


async def test_rearming_many_times_keeps_the_stored_entries_near_the_live_ones() -> None:
    t = timers.Timers(asyncio.get_running_loop())
    now = time.monotonic()
    live = [t.call_at(now + 10 + i, lambda: None) for i in range(100)]
    for _ in range(20):  # every session re-arms 20 times: 2000 dead entries made
        for i, timer in enumerate(live):
            timer.cancel()
            live[i] = t.call_at(now + 10 + i + 0.5, lambda: None)
    assert len(t) == 100
    assert t.stored <= 2 * 100 + 64 + 1
    for timer in live:
        timer.cancel()


async def test_one_timers_per_loop() -> None:
    a = timers.for_loop()
    assert timers.for_loop(asyncio.get_running_loop()) is a


def test_a_closed_loop_and_its_timers_are_not_kept_alive() -> None:
    import gc
    import weakref

    async def use() -> None:
        timers.for_loop().call_at(time.monotonic() + 60, lambda: None)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(use())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def monotonic(self) -> float:
        return self.t


async def test_a_pass_that_starts_inside_a_granule_fires_only_what_is_due(monkeypatch) -> None:
    clock = _Clock(100.0)
    monkeypatch.setattr(timers, "time", clock)
    t = timers.Timers(asyncio.get_running_loop(), granularity=0.010)
    fired: list[str] = []
    t.call_at(100.002, lambda: fired.append("early"))
    t.call_at(100.008, lambda: fired.append("late"))
    clock.t = 100.005  # the loop ran the handle before the granule's end
    t._run()
    assert fired == ["early"] and len(t) == 1
    clock.t = 100.010
    t._run()
    assert fired == ["early", "late"] and len(t) == 0 and t.stored == 0


async def test_counts_hold_when_callbacks_cancel_and_rearm_many_in_one_pass(monkeypatch) -> None:
    clock = _Clock(100.0)
    monkeypatch.setattr(timers, "time", clock)
    t = timers.Timers(asyncio.get_running_loop())
    fired: list[str] = []
    t.call_at(100.001, lambda: churn())
    # due in the same pass, after churn: it cancels them before they run
    same_pass = [t.call_at(100.001, lambda: fired.append("cancelled")) for _ in range(200)]
    later = [t.call_at(100.5 + i * 0.001, lambda: None) for i in range(300)]

    def churn() -> None:  # cancels and re-arms everything while the pass runs
        fired.append("churn")
        for timers_list in (same_pass, later):
            for i, timer in enumerate(timers_list):
                timer.cancel()
                timers_list[i] = t.call_at(100.6 + i * 0.001, lambda: fired.append("re-armed"))

    clock.t = 100.001
    t._run()
    assert fired == ["churn"] and len(t) == 500 and t._cancelled >= 0
    assert t.stored <= 2 * 500 + 64 + 1  # the dead entries do not pile up
    clock.t = 101.0
    t._run()
    assert fired.count("re-armed") == 500 and "cancelled" not in fired
    assert len(t) == 0 and t.stored == 0 and t._cancelled == 0


async def test_an_entry_just_past_a_granule_end_never_fires_before_its_time(monkeypatch) -> None:
    # 1000.3140000000001 / 0.001 rounds to 1000314.0: its granule must be the next one
    clock = _Clock(1000.0)
    monkeypatch.setattr(timers, "time", clock)
    t = timers.Timers(asyncio.get_running_loop())
    at = 1000.3140000000001
    assert at > 1000.314 and (at / 0.001).is_integer()
    fired: list[float] = []
    t.call_at(at, lambda: fired.append(clock.t))
    assert t._wake_at >= at
    clock.t = 1000.314
    t._run()
    assert fired == []
    clock.t = t._wake_at
    t._run()
    assert fired and fired[0] >= at
