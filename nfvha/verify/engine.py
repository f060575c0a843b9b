"""The engine: run probes and watchers, inject a fault, observe, measure, judge.

A scenario supplies a deployment (async context manager) that exposes:
  probes      — list of (Probe, on_change or None)
  watchers    — list of coroutine functions `f(stop: asyncio.Event)`
  attacker    — the Attacker to fire
  done(record) -> bool — the scenario has seen everything it waits for
and the engine runs the phases: baseline → fault → observe (until done,
plus a settle time, or a time limit) → stop → measure → verdicts.
"""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from .attackers import Attacker
from .metrics import Measurement, measure
from .probes import OnChange, Probe
from .timeline import Event, Record


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Phases:
    baseline_s: float = 1.0       # samples before the fault: baseline latency, balancing
    observe_s: float = 10.0       # longest wait after the fault
    settle_s: float = 0.6         # after done(): long enough for a full recovery window
    ready_s: float = 15.0         # longest wait for every probe's first sample


@dataclass
class Plan:
    name: str
    probes: List[Tuple[Probe, Optional[OnChange]]]
    attacker: Attacker
    watchers: List[Callable[[asyncio.Event], Awaitable[None]]] = field(default_factory=list)
    done: Callable[[Record], bool] = lambda r: False
    main_probe: str = "http"
    need_instance_back: bool = True


@dataclass
class Outcome:
    record: Record
    measurement: Measurement
    extra: Dict[str, Any] = field(default_factory=dict)


def _raise_failed(tasks: List[asyncio.Task]) -> None:
    """Raise the exception of the first probe or watcher task that failed."""
    for task in tasks:
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _first_samples(plan: Plan, record: Record, tasks: List[asyncio.Task],
                         limit_s: float) -> None:
    """Wait until every probe has sampled once: a probe that must first reach
    its node (pgrep, then a monitor started over ssh) can take over a second
    on a loaded machine, and a fault injected before it watches has no
    baseline in that probe. Past `limit_s` the run goes on with what it has."""
    names = {p.name for p, _ in plan.probes}
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        _raise_failed(tasks)          # a probe that cannot start says why now
        if names <= {s.probe for s in record.samples}:
            return
        await asyncio.sleep(0.01)


async def execute(plan: Plan, record: Record, phases: Phases) -> Measurement:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(record, stop, cb)) for p, cb in plan.probes]
    tasks += [asyncio.create_task(w(stop)) for w in plan.watchers]
    try:
        await _first_samples(plan, record, tasks, phases.ready_s)
        await asyncio.sleep(phases.baseline_s)
        # A remote attacker's command (kill over ssh) lands before it returns,
        # and a probe may see the fault land first: a provisional mark lets
        # every callback know a fault is under way, or that first sighting
        # (the detection) would be dropped and never come again.
        provisional = Event(time.monotonic(), "fault", f"{plan.attacker.kind} under way")
        record.events.append(provisional)
        try:
            t = await plan.attacker.inject()
        finally:
            record.events.remove(provisional)
        returned = time.monotonic()
        record.mark("fault", t, plan.attacker.describe())
        # The fault landed somewhere in [t, returned]: that span is the fault
        # instant's uncertainty. Observe for the full window after the return,
        # so a slow command cannot eat the time the scenario had to see it.
        record.facts["inject_ms"] = round(1000.0 * (returned - t), 1)
        end = returned + phases.observe_s
        while time.monotonic() < end and not plan.done(record):
            await asyncio.sleep(0.02)
            _raise_failed(tasks)          # a crashed probe must not pass silently
        if plan.done(record):
            await asyncio.sleep(phases.settle_s)
        else:
            record.mark("timeout", time.monotonic(), f"gave up after {phases.observe_s} s")
    finally:
        stop.set()
        await plan.attacker.recover()
        await asyncio.gather(*tasks, return_exceptions=True)
        record.ended = time.monotonic()
    return measure(record, probe=plan.main_probe, need_instance_back=plan.need_instance_back)
