"""A slow fault injection (a kill sent over a loaded ssh link) must not eat the
observation window, and its duration is recorded as the fault's uncertainty."""
from __future__ import annotations

import asyncio
import time

from nfvha.verify.attackers import Attacker
from nfvha.verify.engine import Phases, Plan, execute
from nfvha.verify.probes import Probe
from nfvha.verify.timeline import Record, Sample


class _SlowAttacker(Attacker):
    """Takes `delay` to return, like a remote command; the fault lands at the end."""
    kind = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.landed: float | None = None

    async def inject(self) -> float:
        t = time.monotonic()
        await asyncio.sleep(self.delay)
        self.landed = time.monotonic()
        return t


class _Watch(Probe):
    """Fails from `detect_after` seconds after the attacker's fault has landed."""
    name = "http"

    def __init__(self, attacker: _SlowAttacker, detect_after: float) -> None:
        self.attacker, self.detect_after = attacker, detect_after

    async def run(self, record: Record, stop: asyncio.Event, on_change=None) -> None:
        while not stop.is_set():
            now = time.monotonic()
            landed = self.attacker.landed
            ok = landed is None or now < landed + self.detect_after
            record.add(Sample(now, ok, 1.0, self.name, ""))
            if not ok and record.first("detected") is None:
                record.mark("detected", now, "seen")
            await asyncio.sleep(0.01)


async def test_the_window_counts_from_the_injections_return_and_its_span_is_recorded():
    attacker = _SlowAttacker(0.4)
    record = Record("slow", time.monotonic())
    plan = Plan("slow", [(_Watch(attacker, 0.2), None)], attacker,
                done=lambda r: r.first("detected") is not None, need_instance_back=False)
    # observe_s (0.3 s) is shorter than the injection (0.4 s) plus the 0.2 s
    # the fault takes to show: counted from the fault's start it would give up
    await execute(plan, record, Phases(baseline_s=0.05, observe_s=0.3, settle_s=0.0))
    assert record.first("timeout") is None
    det = record.first("detected")
    assert det is not None and det.t - record.fault_at >= 0.6
    assert 400 <= record.facts["inject_ms"] < 1500


async def test_a_fault_never_seen_still_times_out_after_the_window():
    attacker = _SlowAttacker(0.1)
    record = Record("never", time.monotonic())
    plan = Plan("never", [(_Watch(attacker, 60.0), None)], attacker,
                done=lambda r: r.first("detected") is not None, need_instance_back=False)
    await execute(plan, record, Phases(baseline_s=0.05, observe_s=0.3, settle_s=0.0))
    timeout = record.first("timeout")
    assert timeout is not None and record.first("detected") is None
    assert timeout.t - record.fault_at >= 0.1 + 0.3


class _LandsEarly(Attacker):
    """A remote command whose fault lands well before the command returns."""
    kind = "lands-early"

    def __init__(self) -> None:
        self.landed: float | None = None

    async def inject(self) -> float:
        t = time.monotonic()
        await asyncio.sleep(0.05)
        self.landed = time.monotonic()
        await asyncio.sleep(0.3)                 # the reply is slow to come back
        return t


class _Presence(Probe):
    """Reports each flip through on_change, as the node process monitor does."""
    name = "process"

    def __init__(self, attacker: _LandsEarly) -> None:
        self.attacker = attacker

    async def run(self, record: Record, stop: asyncio.Event, on_change=None) -> None:
        last = None
        while not stop.is_set():
            now = time.monotonic()
            ok = self.attacker.landed is None
            record.add(Sample(now, ok, 1.0, self.name, ""))
            if on_change is not None and ok != last:
                on_change(ok, now, "")
            last = ok
            await asyncio.sleep(0.01)


async def test_a_fault_seen_before_the_injection_returns_is_still_detected():
    attacker = _LandsEarly()
    record = Record("early", time.monotonic())

    def on_change(ok: bool, t: float, detail: str) -> None:
        # what every scenario callback does: only a change after a fault counts
        if not ok and record.fault_at is not None and record.first("detected") is None:
            record.mark("detected", t, "gone")

    plan = Plan("early", [(_Presence(attacker), on_change)], attacker,
                done=lambda r: r.first("detected") is not None, need_instance_back=False)
    await execute(plan, record, Phases(baseline_s=0.05, observe_s=1.0, settle_s=0.0))
    det, fault = record.first("detected"), record.first("fault")
    assert det is not None and record.first("timeout") is None
    assert fault.t <= attacker.landed <= det.t < fault.t + 0.3     # seen before the return
    assert [e.kind for e in record.events].count("fault") == 1    # the provisional mark is gone
    assert fault.detail == "lands-early"


async def test_an_injection_that_fails_leaves_no_fault_behind():
    class _Refused(Attacker):
        async def inject(self) -> float:
            await asyncio.sleep(0.01)
            raise RuntimeError("kill on node-a failed: no such process")

    record = Record("refused", time.monotonic())
    plan = Plan("refused", [(_Watch(_SlowAttacker(0), 1.0), None)], _Refused())
    try:
        await execute(plan, record, Phases(baseline_s=0.02, observe_s=0.1, settle_s=0.0))
    except RuntimeError as exc:
        assert "no such process" in str(exc)
    else:
        raise AssertionError("the attacker's failure was swallowed")
    assert record.first("fault") is None
