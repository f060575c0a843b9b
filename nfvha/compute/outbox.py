"""Fault outbox: every fault is *called* to the controller until it is acked.

The controller may be down, restarting, or failing; as long as the compute
agent runs, no fault is lost. Faults are delivered concurrently (a bounded
number in flight), each retried with exponential backoff; the controller
deduplicates by event id, so a retry after a lost answer is harmless.

A refusal is final: the controller answers a malformed fault ``{"ok":
false, "error": ...}`` after checking it, and the same event can never
pass; it is dropped (counted in ``refused``, logged once, its spool file
kept as ``<id>.refused`` for a look), not retried. Only a failed call (the
controller unreachable, timing out, raising) is retried.

With a spool directory, each fault is also written there (one JSON file per
event, removed when the controller acks it) before it is queued, and a new
agent resends what an old one left: a compute agent restarted while the
controller is unreachable loses nothing either. No fsync: the files must
outlive the agent process, not the host (a host crash takes its VMs along).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


@dataclass
class _Entry:
    event: dict[str, Any]
    attempts: int = 0
    last_error: str = ""
    acked: asyncio.Event = field(default_factory=asyncio.Event)  # or refused: settled
    refused: bool = False


class FaultOutbox:
    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[Any]], *,
                 concurrency: int = 8, backoff_base_s: float = 0.05,
                 backoff_max_s: float = 2.0, spool_dir: Path | None = None) -> None:
        self._send = send
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self._concurrency = concurrency
        self._base = backoff_base_s
        self._max = backoff_max_s
        self._pending: dict[str, _Entry] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._retry_handles: dict[str, asyncio.TimerHandle] = {}
        self.delivered = 0
        self.attempts = 0
        self.failures = 0
        self.refused = 0  # faults the controller refused as malformed (dropped)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._resend_spooled()
        self._workers = [loop.create_task(self._work(), name=f"fault-outbox-{i}")
                         for i in range(self._concurrency)]

    async def stop(self) -> None:
        for handle in self._retry_handles.values():
            handle.cancel()
        self._retry_handles.clear()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers = []
        if self._pending:
            # Only a stopping agent drops faults; say which.
            where = (f"kept in {self.spool_dir} for the next start" if self.spool_dir
                     else "LOST (no spool directory)")
            LOG.error("compute agent stopping with %d undelivered faults, %s: %s",
                      len(self._pending), where, sorted(self._pending))
        elif self.spool_dir is not None:
            try:
                self.spool_dir.rmdir()  # only when empty: nothing is owed
            except OSError:
                pass

    def put(self, event: dict[str, Any]) -> None:
        """Queue `event` (must carry a unique "id"); returns at once."""
        if event["id"] in self._pending:
            return
        self._spool(event)
        self._pending[event["id"]] = _Entry(event)
        self._ready.put_nowait(event["id"])

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_events(self) -> list[dict[str, Any]]:
        return [e.event for e in self._pending.values()]

    async def wait_delivered(self, event_id: str) -> None:
        entry = self._pending.get(event_id)
        if entry is not None:
            await entry.acked.wait()

    async def _work(self) -> None:
        while True:
            event_id = await self._ready.get()
            entry = self._pending.get(event_id)
            if entry is None:
                continue
            entry.attempts += 1
            self.attempts += 1
            try:
                answer = await self._send(entry.event)
                if _refusal(answer):
                    self._refused(event_id, entry, answer)
                    continue
                ok = isinstance(answer, dict) and answer.get("ok") is True
                if not ok:
                    raise ValueError(f"not acknowledged: {answer!r}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # controller down, timing out, or refusing
                self.failures += 1
                entry.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(self._max, self._base * 2 ** min(entry.attempts - 1, 20))
                if entry.attempts == 1 or entry.attempts % 10 == 0:
                    LOG.warning("fault %s not delivered (attempt %d, retry in %.2fs): %s",
                                event_id, entry.attempts, delay, entry.last_error)
                loop = asyncio.get_running_loop()
                self._retry_handles[event_id] = loop.call_later(
                    delay, self._retry, event_id)
                continue
            del self._pending[event_id]
            self._unspool(event_id)
            self.delivered += 1
            entry.acked.set()

    def _refused(self, event_id: str, entry: _Entry, answer: dict[str, Any]) -> None:
        del self._pending[event_id]
        self.refused += 1
        entry.refused = True
        entry.last_error = str(answer.get("error"))[:500]
        LOG.error("fault %s refused by the controller, dropped (a refusal is final): %s",
                  event_id, entry.last_error)
        path = self._path(event_id)
        if path is not None:
            try:
                path.rename(path.with_suffix(".refused"))  # not resent by the next agent
            except FileNotFoundError:
                pass
            except OSError as exc:
                LOG.warning("refused fault %s stays in the spool: %s", event_id, exc)
        entry.acked.set()  # settled: nobody waits for it any longer

    def _retry(self, event_id: str) -> None:
        self._retry_handles.pop(event_id, None)
        self._ready.put_nowait(event_id)

    # -- spool -------------------------------------------------------------------------
    def _path(self, event_id: str) -> Path | None:
        if self.spool_dir is None:
            return None
        # Ids are made by this agent (uuid4); refuse anything that is not a plain name.
        if not event_id or "/" in event_id or event_id.startswith("."):
            return None
        return self.spool_dir / f"{event_id}.json"

    def _spool(self, event: dict[str, Any]) -> None:
        path = self._path(str(event["id"]))
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(event))
            os.replace(tmp, path)  # a reader never sees half a file
        except OSError as exc:
            LOG.error("fault %s not spooled to %s (kept in memory only): %s",
                      event["id"], self.spool_dir, exc)

    def _unspool(self, event_id: str) -> None:
        path = self._path(event_id)
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                LOG.warning("delivered fault %s stays in the spool: %s", event_id, exc)

    def _resend_spooled(self) -> None:
        if self.spool_dir is None or not self.spool_dir.is_dir():
            return
        found = 0
        for path in sorted(self.spool_dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                event = json.loads(path.read_text())
                if not isinstance(event, dict) or event.get("id") != path.stem:
                    raise ValueError("not a spooled fault event")
            except (OSError, ValueError) as exc:
                LOG.error("unreadable spool file %s set aside: %s", path, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            if event["id"] not in self._pending:
                self._pending[event["id"]] = _Entry(event)
                self._ready.put_nowait(event["id"])
                found += 1
        if found:
            LOG.warning("resending %d fault(s) an earlier compute agent left undelivered", found)


def _refusal(answer: Any) -> bool:
    """The controller's final "no": it checked the event and refused it
    (service.Controller.fault). Anything else that is not an ack is retried."""
    return isinstance(answer, dict) and answer.get("ok") is False \
        and isinstance(answer.get("error"), str)
