"""Fault delivery: every stored fault to every configured sink.

Order of work for a fault: 1. commit the event and one pending delivery per
sink (store.py), leased to this controller; 2. the compute is acked (by the
caller); 3. each sink is called in a task of its own, retried with backoff
until it acks or rejects for good. Leases are renewed and expired ones
taken over in a loop, so controllers sharing a store take over each
other's deliveries, and after a crash ``start`` resumes what is pending.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any, Awaitable, Callable, Iterable, Optional, TypeVar

from nfvha.controller.backoff import backoff_delay
from nfvha.controller.metrics import ControllerMetrics
from nfvha.controller.planned import PlannedOps
from nfvha.controller.reporters import Reject, Reporter, Retry
from nfvha.controller.store import Store
from nfvha.controller.timeutil import iso, parse_utc, utcnow

LOG = logging.getLogger(__name__)
T = TypeVar("T")

Db = Callable[..., Awaitable[Any]]  # runs a Store method on a DB thread
Notify = Callable[[dict[str, Any]], None]  # tells the controller's listeners
Key = tuple[str, str]  # (event id, sink)

# what a reporter sees of a stored event (no bookkeeping)
_EVENT_KEYS = ("id", "instance_uuid", "host", "kind", "corrective_action", "detail",
               "detected_at", "received_at")


class Deliveries:
    """The deliveries this controller makes, one task each, and its leases
    on them in the store."""

    def __init__(self, reporters: dict[str, Reporter], metrics: ControllerMetrics,
                 db: Db, lease_db: Db, notify: Notify, planned: PlannedOps, *,
                 controller_id: str, lease_s: float, retry_base_s: float,
                 retry_max_s: float, attempt_timeout_s: float, planned_grace_s: float,
                 rand: Callable[[], float]) -> None:
        self.reporters = reporters  # the controller's own dict: the sinks by name
        self.metrics = metrics
        self._db = db
        self._lease_db = lease_db  # claims only: a thread no fault write delays
        self._notify = notify
        self.controller_id = controller_id
        self.lease_s = lease_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.attempt_timeout_s = attempt_timeout_s
        self.stop_grace_s = min(attempt_timeout_s, 5.0)
        self._rand = rand
        # Nova operations in progress: only once a notification listener runs
        # (planned_active) is a fault held and checked against them
        self.planned = planned
        self.planned_grace_s = planned_grace_s
        self.planned_active = False
        self.store: Optional[Store] = None
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        # deliveries whose sink is being called right now: stop() lets them end
        # (cancelled, the sink may have it already and the next owner repeats it)
        self._attempting: set[Key] = set()
        self._done_meanwhile: Optional[set[Key]] = None  # during a claim
        self._lease_task: Optional[asyncio.Task[None]] = None
        self._unknown_sinks: set[Key] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.stopping = False
        self._storing = 0  # accept() calls between the decision to own and the write

    # --- life cycle --------------------------------------------------------
    async def start(self, store: Store) -> None:
        """Resume every delivery pending in ``store`` that is ours or whose
        lease ran out, then keep claiming."""
        self.store = store
        self.stopping = False
        resumed = await self._claim()
        if resumed:
            LOG.info("resumed %d pending deliveries", resumed)
        self._lease_task = asyncio.create_task(self._lease_loop(), name="nfvha-leases")

    def halt(self) -> None:
        """No delivery starts from now on: a fault arriving is stored for the
        other controllers (the first step of the controller's stop)."""
        self.stopping = True

    async def stop(self, release_leases: bool) -> None:
        """Hand over (after halt()): a sink being called now gets up to
        ``stop_grace_s`` to answer, the rest stays pending in the store."""
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
            self._lease_task = None
        attempting = [t for k, t in self._tasks.items() if k in self._attempting]
        for k, t in list(self._tasks.items()):
            if k not in self._attempting:
                t.cancel()  # between attempts: nothing half-sent
        if attempting:
            await asyncio.wait(attempting, timeout=self.stop_grace_s)
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A fault stored with our lease as stop() began: on a server database
        # its write runs on another DB thread and may commit after the release
        # below, leaving it leased to us until the lease runs out. Let it land.
        deadline = time.monotonic() + self.stop_grace_s
        while self._storing and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if release_leases and self.store is not None:
            try:
                await self._db(self.store.release_leases, self.controller_id)
            except Exception:  # the leases will simply run out
                LOG.exception("releasing delivery leases")

    async def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Wait until no delivery is in progress."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # --- leases ------------------------------------------------------------
    async def _claim(self) -> int:
        """Renew our leases, take over expired ones, start what is not running."""
        assert self.store is not None
        now = utcnow()
        before = set(self._tasks)  # those spawned meanwhile may postdate the query
        self._done_meanwhile = set()
        mine = await self._lease_db(self.store.claim_pending, self.controller_id, now,
                                    now + timedelta(seconds=self.lease_s))
        done, self._done_meanwhile = self._done_meanwhile, None
        started = 0
        owned = set()
        for ev, sink, attempts in mine:
            owned.add((ev["id"], sink))
            # pending when the query ran, finished since: not to be sent again
            if (ev["id"], sink) not in self._tasks and (ev["id"], sink) not in done:
                started += self._spawn(ev, sink, attempts, received_mono=None)
        for key, task in list(self._tasks.items()):
            if key in before and key not in owned and key not in self._attempting:
                # our lease ran out (we or the database stalled) and another
                # controller holds it now: two owners would deliver it twice
                LOG.warning("delivery of %s to %s taken over by another controller", *key)
                task.cancel()
        return started

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 4)  # renew, and take over a dead one's
            try:
                taken = await self._claim()
                if taken:
                    LOG.info("took over %d pending deliveries", taken)
            except asyncio.CancelledError:
                raise
            except Exception:  # store briefly unreachable: try again next round
                LOG.exception("lease renewal failed")

    # --- events in ---------------------------------------------------------
    async def accept(self, ev: dict[str, Any], received_mono: float) -> dict[str, Any]:
        """A compute's validated fault: stored, then delivered to every sink;
        returns the compute's ack. Idempotent by id."""
        assert self.store is not None
        stopping = self.stopping  # stored unowned: another controller delivers it
        self._storing += 1
        try:
            stored, created = await self._db(
                self.store.record_fault, ev, list(self.reporters), None,
                None if stopping else self.controller_id, None,
                None if stopping else self.lease_s)
        finally:
            self._storing -= 1
        if not created:
            self.metrics.duplicates.inc()
            return {"ok": True, "id": stored["id"], "duplicate": True}
        self.metrics.faults.labels(stored["kind"]).inc()
        self._notify({"type": "fault", "event": stored})
        if self.stopping:
            if not stopping:  # stop() began while we stored it
                await self._db(self.store.release_event, stored["id"], self.controller_id)
            return {"ok": True, "id": stored["id"]}
        for sink in self.reporters:
            self._spawn(stored, sink, 0, received_mono)
        return {"ok": True, "id": stored["id"]}

    async def emit(self, ev: dict[str, Any], skip_sinks: Iterable[str] = ()
                   ) -> dict[str, Any]:
        """A validated event of the controller's own: stored and delivered
        like a fault, to every sink but ``skip_sinks``. Idempotent by id."""
        assert self.store is not None
        sinks = [s for s in self.reporters if s not in set(skip_sinks)]
        stored, created = await self._db(
            self.store.record_fault, ev, sinks, None, self.controller_id,
            utcnow() + timedelta(seconds=self.lease_s))
        if not created:
            return {"ok": True, "id": stored["id"], "duplicate": True}
        self.metrics.faults.labels(stored["kind"]).inc()
        self._notify({"type": "fault", "event": stored})
        received_mono = time.monotonic()
        for sink in sinks:
            self._spawn(stored, sink, 0, received_mono)
        return {"ok": True, "id": stored["id"]}

    # --- delivery ----------------------------------------------------------
    def _spawn(self, ev: dict[str, Any], sink: str, attempts: int,
               received_mono: Optional[float]) -> int:
        key = (ev["id"], sink)
        if key in self._tasks:
            return 0
        if sink not in self.reporters:
            if key not in self._unknown_sinks:  # say it once, not every lease round
                self._unknown_sinks.add(key)
                LOG.warning("delivery of %s to %r stays pending: no such sink configured",
                            ev["id"], sink)
            return 0
        self.metrics.pending.labels(sink).inc()
        task = asyncio.create_task(self._deliver(ev, sink, attempts, received_mono),
                                   name=f"deliver {sink} {ev['id']}")
        self._tasks[key] = task
        self._idle.clear()

        def done(_t: asyncio.Task[None]) -> None:
            self._tasks.pop(key, None)
            if self._done_meanwhile is not None:
                self._done_meanwhile.add(key)
            self.metrics.pending.labels(sink).dec()
            if not self._tasks:
                self._idle.set()

        task.add_done_callback(done)
        return 1

    async def _planned(self, ev: dict[str, Any], received_mono: Optional[float]) -> Optional[str]:
        """Why the fault is a planned operation (after the grace), or None."""
        if not self.planned_active:
            return None
        if received_mono is not None:
            wait = received_mono + self.planned_grace_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return self.planned.explains(ev["instance_uuid"], time.monotonic())

    async def _deliver(self, ev: dict[str, Any], sink: str, attempts: int,
                       received_mono: Optional[float]) -> None:
        assert self.store is not None
        reporter = self.reporters[sink]
        reason = await self._planned(ev, received_mono)
        if reason is not None:
            if await self._db_retry(self.store.mark_suppressed, ev["id"], sink, reason):
                self.metrics.suppressed.labels(sink).inc()
                LOG.info("%s not told of %s (%s on %s): %s", sink, ev["id"], ev["kind"],
                         ev["instance_uuid"], reason)
            self._notify({"type": "delivery", "event_id": ev["id"], "sink": sink,
                          "status": "suppressed", "attempts": 0, "note": reason})
            return
        public = {k: ev[k] for k in _EVENT_KEYS}
        failures = attempts
        # a sink whose attempt may take longer (the recovery sink waits,
        # gives notice, then acts) says so
        timeout_s = getattr(reporter, "attempt_timeout_s", None) or self.attempt_timeout_s
        key = (ev["id"], sink)
        try:
            while True:
                if self.stopping:
                    return  # pending: handed over
                self._attempting.add(key)
                if not await self._db_retry(self.store.confirm_lease, ev["id"], sink,
                                            self.controller_id, self.lease_s):
                    LOG.info("delivery of %s to %s is no longer ours (taken over, or done)",
                             ev["id"], sink)
                    return
                self.metrics.attempts.labels(sink).inc()
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                    # cancel that races with the reporter finishing, and stop() hangs
                    async with asyncio.timeout(timeout_s):
                        note = await reporter.deliver(dict(public))
                except Reject as exc:
                    self.metrics.failures.labels(sink, "true").inc()
                    LOG.warning("%s rejected %s: %s", sink, ev["id"], exc.reason)
                    await self._db_retry(self.store.mark_rejected, ev["id"], sink, exc.reason)
                    self._notify({"type": "delivery", "event_id": ev["id"], "sink": sink,
                                  "status": "rejected", "attempts": failures + 1,
                                  "error": exc.reason})
                    return
                except Exception as exc:  # Retry, timeout, or a bug in the reporter
                    reason = exc.reason if isinstance(exc, Retry) else (
                        f"timeout after {timeout_s}s" if isinstance(exc, asyncio.TimeoutError)
                        else f"{type(exc).__name__}: {exc}")
                    if not isinstance(exc, (Retry, asyncio.TimeoutError)):
                        LOG.exception("reporter %s failed unexpectedly", sink)
                    failures += 1
                    self.metrics.failures.labels(sink, "false").inc()
                    await self._db_retry(self.store.mark_failed_attempt, ev["id"], sink, reason)
                    self._attempting.discard(key)  # waiting now: stop() need not wait
                    if self.stopping:
                        return
                    delay = backoff_delay(failures, self.retry_base_s, self.retry_max_s,
                                          self._rand())
                    LOG.info("%s: attempt %d for %s failed (%s); next in %.3fs", sink, failures,
                             ev["id"], reason, delay)
                    await asyncio.sleep(delay)
                    if self.stopping:  # belt and braces: never outlive stop()
                        return
                    continue
                at = utcnow()
                if received_mono is not None:
                    latency = time.monotonic() - received_mono
                else:  # resumed after a restart: only the wall clock spans it
                    latency = (at - parse_utc(ev["received_at"])).total_seconds()
                self.metrics.latency.labels(sink).observe(max(latency, 0.0))
                await self._db_retry(self.store.mark_delivered, ev["id"], sink, note, at)
                self._notify({"type": "delivery", "event_id": ev["id"], "sink": sink,
                              "status": "delivered", "attempts": failures + 1, "note": note,
                              "delivered_at": iso(at), "latency_s": latency})
                return
        finally:
            self._attempting.discard(key)

    async def _db_retry(self, fn: Callable[..., T], *args: Any) -> T:
        """A bookkeeping write must land, or the sink hears the event again."""
        failures = 0
        while True:
            try:
                return await self._db(fn, *args)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                LOG.exception("store write failed (%d)", failures)
                await asyncio.sleep(backoff_delay(failures, self.retry_base_s,
                                                  self.retry_max_s, self._rand()))
