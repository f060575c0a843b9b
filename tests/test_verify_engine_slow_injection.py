"""A slow fault injection (a kill sent over a loaded ssh link) must not eat the
observation window, and its duration is recorded as the fault's uncertainty;
a fault a probe sees before the injection's command returns is detected;
the fault waits for every probe's first sample (a probe that starts late
still has a baseline), within a limit."""
from __future__ import annotations

import asyncio
import time

from nfvha.verify.attackers import Attacker
from nfvha.verify.engine import Phases, Plan, execute
from nfvha.verify.probes import Probe
from nfvha.verify.timeline import Record, Sample


class _Remote(Attacker):
    """Like a remote command: the fault lands `lands_after` s into the
    injection, which returns `returns_after` s after that."""

    def __init__(self, lands_after: float, returns_after: float = 0.0,
                 kind: str = "remote") -> None:
        self.lands_after, self.returns_after, self.kind = lands_after, returns_after, kind
        self.landed: float | None = None

    async def inject(self) -> float:
        t = time.monotonic()
        await asyncio.sleep(self.lands_after)
        self.landed = time.monotonic()
        await asyncio.sleep(self.returns_after)
        return t


class _Sees(Probe):
    """Fails from `after` s past the attacker's landing on, and reports each
    flip through on_change, as the node process monitor does."""
    name = "process"

    def __init__(self, attacker: _Remote, after: float = 0.0) -> None:
        self.attacker, self.after = attacker, after

    async def run(self, record: Record, stop: asyncio.Event, on_change=None) -> None:
        last = None
        while not stop.is_set():
            now = time.monotonic()
            landed = self.attacker.landed
            ok = landed is None or now < landed + self.after
            record.add(Sample(now, ok, 1.0, self.name, ""))
            if on_change is not None and ok != last:
                on_change(ok, now, "")
            last = ok
            await asyncio.sleep(0.01)


def _plan(name: str, record: Record, probe: _Sees, attacker: Attacker) -> Plan:
    def on_change(ok: bool, t: float, detail: str) -> None:
        # what every scenario callback does: only a change after a fault counts
        if not ok and record.fault_at is not None and record.first("detected") is None:
            record.mark("detected", t, "gone")

    return Plan(name, [(probe, on_change)], attacker,
                done=lambda r: r.first("detected") is not None, need_instance_back=False)


async def test_the_window_counts_from_the_injections_return_and_its_span_is_recorded():
    attacker = _Remote(0.4)
    record = Record("slow", time.monotonic())
    # observe_s (0.3 s) is shorter than the injection (0.4 s) plus the 0.2 s
    # the fault takes to show: counted from the fault's start it would give up
    await execute(_plan("slow", record, _Sees(attacker, 0.2), attacker), record,
                  Phases(baseline_s=0.05, observe_s=0.3, settle_s=0.0))
    assert record.first("timeout") is None
    det = record.first("detected")
    assert det is not None and det.t - record.fault_at >= 0.6
    assert 400 <= record.facts["inject_ms"] < 1500


async def test_a_fault_never_seen_still_times_out_after_the_window():
    attacker = _Remote(0.1)
    record = Record("never", time.monotonic())
    await execute(_plan("never", record, _Sees(attacker, 60.0), attacker), record,
                  Phases(baseline_s=0.05, observe_s=0.3, settle_s=0.0))
    timeout = record.first("timeout")
    assert timeout is not None and record.first("detected") is None
    assert timeout.t - record.fault_at >= 0.1 + 0.3


async def test_a_fault_seen_before_the_injection_returns_is_still_detected():
    # the fault lands 50 ms in; the command's reply takes another 300 ms
    attacker = _Remote(0.05, 0.3, kind="lands-early")
    record = Record("early", time.monotonic())
    await execute(_plan("early", record, _Sees(attacker), attacker), record,
                  Phases(baseline_s=0.05, observe_s=1.0, settle_s=0.0))
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
    try:
        await execute(_plan("refused", record, _Sees(_Remote(0), 1.0), _Refused()), record,
                      Phases(baseline_s=0.02, observe_s=0.1, settle_s=0.0))
    except RuntimeError as exc:
        assert "no such process" in str(exc)
    else:
        raise AssertionError("the attacker's failure was swallowed")
    assert record.first("fault") is None


class _StartsLate(_Sees):
    """Its first sample comes `start_after` s in, as the node process monitor's
    does on a loaded machine (pgrep over ssh, then the monitor's own session)."""

    def __init__(self, attacker: _Remote, start_after: float,
                 fails: Exception | None = None) -> None:
        super().__init__(attacker)
        self.start_after, self.fails = start_after, fails

    async def run(self, record: Record, stop: asyncio.Event, on_change=None) -> None:
        try:
            await asyncio.wait_for(stop.wait(), self.start_after)
            return                    # stopped before it ever started
        except asyncio.TimeoutError:
            pass
        if self.fails is not None:
            raise self.fails
        await super().run(record, stop, on_change)


async def test_the_fault_waits_for_a_probe_that_starts_late():
    attacker = _Remote(0.0)
    record = Record("late-probe", time.monotonic())
    await execute(_plan("late-probe", record, _StartsLate(attacker, 0.4), attacker), record,
                  Phases(baseline_s=0.05, observe_s=1.0, settle_s=0.0))
    before = [s for s in record.samples if s.t < record.fault_at]
    # a baseline of its own: the first sample, then baseline_s of them
    assert before and record.fault_at - before[0].t >= 0.05
    assert record.first("detected") is not None


async def test_a_probe_that_cannot_start_stops_the_run_before_any_fault():
    attacker = _Remote(0.0)
    record = Record("no-probe", time.monotonic())
    probe = _StartsLate(attacker, 0.05, LookupError("no process matches 'x' on node-a"))
    try:
        await execute(_plan("no-probe", record, probe, attacker), record,
                      Phases(baseline_s=0.05, observe_s=1.0, settle_s=0.0))
    except LookupError as exc:
        assert "no process matches" in str(exc)
    else:
        raise AssertionError("the probe's failure was swallowed")
    assert attacker.landed is None and record.first("fault") is None


async def test_a_probe_that_never_samples_delays_the_fault_only_up_to_its_limit():
    attacker = _Remote(0.0)
    record = Record("silent-probe", time.monotonic())
    t0 = time.monotonic()
    await execute(_plan("silent-probe", record, _StartsLate(attacker, 60.0), attacker), record,
                  Phases(baseline_s=0.05, observe_s=0.1, settle_s=0.0, ready_s=0.3))
    assert record.fault_at - t0 >= 0.3 + 0.05
    assert record.first("timeout") is not None
