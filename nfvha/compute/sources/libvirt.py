"""Channels from the domains of a libvirtd, followed by lifecycle events.

``LibvirtSource(uri)`` (``[compute] instances_source = libvirt``):

- at start, and after every reconnection, the running domains' ``<channel>``s
  (compute/domain_xml.py) are offered to the pool; from then on events, no
  polling: a domain that starts is offered, one that stops is withdrawn
  with its reason (shut down, destroyed, migrated, saved: the loss that
  follows is no fault), a channel hot-plugged or unplugged (DEVICE_ADDED /
  DEVICE_REMOVED) is offered or withdrawn ("channel detached");
- ``explain_loss(uuid)``: the domain's state is asked at once; if it does
  not say why yet, the lifecycle event is waited for (``loss_wait_s``).
  The emulator died (STOPPED/FAILED) or the guest crashed (STOPPED/CRASHED,
  CRASHED): ``vm_crashed``; stopped for a reason or channel detached: no
  fault; still running: ``channel_lost`` stands;
- each crash is reported once: to the ``explain_loss`` waiting for it, else
  to ``on_crash(uuid, detail)`` (default: the pool's ``report_fault``; the
  guest may never have registered, or had no channel at all); an
  ``explain_loss`` that comes after ``on_crash`` reported the crash answers
  "no fault: already reported";
- ``recover(uuid, "reset")``: hard reset (``virDomainReset``), or destroy +
  start when the reset fails or the domain is not running; ``"destroy"``:
  destroy (already shut off: ok);
- libvirtd restarts: its close callback starts reconnecting (backoff up to
  ``reconnect_max_s``), the domains are listed again and only what changed
  meanwhile is offered or withdrawn; the running VMs' channels are not
  touched (QEMU keeps its sockets while libvirtd is away).

Threads: libvirt-python calls block, so they run in a small thread pool;
libvirt's own event loop runs in one daemon thread per process
(``ensure_event_loop()``), whose callbacks only hand the event over to the
asyncio loop.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from nfvha.compute import domain_xml
from nfvha.compute.pool import HEARTBEAT, MESSAGING, ChannelPool, ChannelSpec
from nfvha.compute.sources import CHANNEL_LOST, VM_CRASHED, LossVerdict

LOG = logging.getLogger(__name__)

# STOPPED event details -> (fault kind or None, what happened)
_STOPPED = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: (None, "shut down"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: (None, "destroyed"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: (VM_CRASHED, "crashed (the guest crashed)"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: (None, "migrated away"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: (None, "saved"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: (VM_CRASHED, "failed (its QEMU died)"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: (None, "reverted to a snapshot"),
}
# shut-off reasons of virDomainGetState -> the same
_SHUTOFF = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: (None, "shut down"),
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: (None, "destroyed"),
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: (VM_CRASHED, "crashed (the guest crashed)"),
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: (None, "migrated away"),
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: (None, "saved"),
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: (VM_CRASHED, "failed (its QEMU died)"),
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: (None, "reverted to a snapshot"),
    # UNKNOWN, DAEMON (found dead by a restarted libvirtd): cannot say; the loss stands
}
_CRASHED = {
    libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED: "crashed (guest kernel panic)",
    libvirt.VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED: "crashed (guest loaded a crash kernel)",
}
_LIFECYCLE_NAMES = {
    0: "DEFINED", 1: "UNDEFINED", 2: "STARTED", 3: "SUSPENDED", 4: "RESUMED", 5: "STOPPED",
    6: "SHUTDOWN", 7: "PMSUSPENDED", 8: "CRASHED",
}
_STATE_NAMES = {0: "no state", 1: "running", 2: "blocked", 3: "paused", 4: "shutting down",
                5: "shut off", 6: "crashed", 7: "suspended by the guest"}
DETACHED = "channel detached"


def stopped_verdict(detail: int) -> tuple[str | None, str]:
    """(fault kind or None, text) for a STOPPED event's detail; an unknown
    detail leaves the loss standing."""
    return _STOPPED.get(detail, (CHANNEL_LOST, f"stopped (detail {detail})"))


def state_verdict(state: int, reason: int) -> tuple[str | None, str] | None:
    """What virDomainGetState says about a lost channel, None when it cannot
    say yet (running, paused, shutting down: wait for the event)."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return _SHUTOFF.get(reason, (CHANNEL_LOST, f"shut off (reason {reason})"))
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return VM_CRASHED, "crashed" + (" (guest kernel panic)"
                                        if reason == libvirt.VIR_DOMAIN_CRASHED_PANICKED else "")
    return None


# ---------------------------------------------------------------------- event loop thread
_EVENT_LOCK = threading.Lock()
_EVENT_THREAD: threading.Thread | None = None


def ensure_event_loop() -> None:
    """libvirt's default event loop, run by one daemon thread for the whole
    process; must be in place before a connection that wants events is opened."""
    global _EVENT_THREAD
    with _EVENT_LOCK:
        if _EVENT_THREAD is not None:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # we log what we catch
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # a callback of ours raising must not end event delivery
                    LOG.exception("libvirt event loop")
                    time.sleep(0.01)

        _EVENT_THREAD = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _EVENT_THREAD.start()


def _post(opaque: tuple[weakref.ref[LibvirtSource], int], item: tuple[Any, ...]) -> None:
    """From libvirt's event thread: hand an event to the source's asyncio loop.
    Only local calls here (dom.UUIDString/name are; XMLDesc is an RPC)."""
    src = opaque[0]()
    if src is None:
        return
    src._post(opaque[1], item)


def _on_lifecycle(_conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
    _post(opaque, ("life", dom.UUIDString().lower(), dom.name(), event, detail))


def _on_device_added(_conn: Any, dom: Any, alias: str, opaque: Any) -> None:
    _post(opaque, ("added", dom.UUIDString().lower(), dom.name(), alias))


def _on_device_removed(_conn: Any, dom: Any, alias: str, opaque: Any) -> None:
    _post(opaque, ("removed", dom.UUIDString().lower(), dom.name(), alias))


def _on_reboot(_conn: Any, dom: Any, opaque: Any) -> None:
    _post(opaque, ("reboot", dom.UUIDString().lower(), dom.name()))


def _on_close(_conn: Any, reason: int, opaque: Any) -> None:
    _post(opaque, ("closed", reason))


# ---------------------------------------------------------------------- the source
@dataclass
class _Domain:
    name: str
    offered: dict[str, ChannelSpec] = field(default_factory=dict)  # kind -> spec
    aliases: dict[str, str] = field(default_factory=dict)          # device alias -> kind
    problems: tuple[str, ...] = ()


@dataclass
class _Stop:
    """A domain's last stop or crash, as its event said."""
    mono: float
    kind: str | None          # None: no fault; vm_crashed; channel_lost
    detail: str
    reported: bool = False    # a crash already reported (to a waiter or on_crash)
    detached: bool = False    # not a stop: the heartbeat channel was unplugged


@dataclass(frozen=True)
class _Fetched:
    uuid: str
    name: str
    active: bool
    xml: str | None
    inodes: dict[str, int]


class LibvirtSource:
    name = "libvirt"

    def __init__(self, uri: str = "qemu:///system", *, loss_wait_s: float = 3.0,
                 on_crash: Callable[[str, str], object] | None = None,
                 reconnect_max_s: float = 5.0, keepalive_s: int = 5,
                 stop_memory_s: float = 120.0, recover_wait_s: float = 30.0,
                 on_domain: Callable[[domain_xml.DomainInfo], object] | None = None
                 ) -> None:
        """`on_crash(uuid, detail)`: a crash no explain_loss was waiting for
        (called on the asyncio loop); default the pool's report_fault(uuid,
        "vm_crashed", detail). `stop_memory_s`: how long a stop is remembered
        to explain a loss reported after it."""
        self.uri = uri
        self.loss_wait_s = loss_wait_s
        self.on_crash = on_crash
        self.recover_wait_s = recover_wait_s
        # every running domain as read (start, re-list, device change): the
        # flavor's channels are hot-plugged from there (compute/autoplug.py)
        self.on_domain = on_domain
        self.reconnect_max_s = reconnect_max_s
        self.keepalive_s = keepalive_s
        self.stop_memory_s = stop_memory_s
        self.connected = False
        self.counters = {"connects": 0, "disconnects": 0, "events": 0, "offered": 0,
                         "withdrawn": 0, "crashes": 0, "reboots": 0, "explained": 0}
        # (mono, uuid, name, what) of the latest events, for logs, tests and `show`
        self.recent: collections.deque[tuple[float, str, str, str]] = \
            collections.deque(maxlen=256)
        self._pool: ChannelPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exec = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="libvirt")
        self._conn: Any = None
        self._gen = 0                 # connection generation: events of an old one are dropped
        self._cb_ids: list[int] = []
        self._domains: dict[str, _Domain] = {}
        self._life: dict[str, int] = collections.defaultdict(int)  # per-domain event counter
        self._reads: dict[str, int] = collections.defaultdict(int)  # per-domain XML reads asked
        self._stops: dict[str, _Stop] = {}
        self._waiters: dict[str, list[asyncio.Future[LossVerdict]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopping = False

    # -- InstanceSource -----------------------------------------------------------------
    async def start(self, pool: ChannelPool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        ensure_event_loop()
        try:
            await self._connect()
        except libvirt.libvirtError as exc:
            LOG.error("libvirtd at %s is not reachable (%s); retrying in the background",
                      self.uri, _msg(exc))
        if not self.connected:
            self._reconnect_soon()

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks) + ([self._reconnecting] if self._reconnecting else []):
            task.cancel()
        for task in list(self._tasks) + ([self._reconnecting] if self._reconnecting else []):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for futs in self._waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(LossVerdict(CHANNEL_LOST, "the libvirt source stopped"))
        conn, self._conn, self.connected = self._conn, None, False
        if conn is not None:
            await self._call(self._close_blocking, conn, list(self._cb_ids))
        self._cb_ids = []
        self._exec.shutdown(wait=False)

    async def explain_loss(self, uuid: str) -> LossVerdict:
        uuid = uuid.lower()
        self.counters["explained"] += 1
        known = self._remembered(uuid)
        if known is not None:
            return known
        assert self._loop is not None
        fut: asyncio.Future[LossVerdict] = self._loop.create_future()
        self._waiters.setdefault(uuid, []).append(fut)
        try:
            said = await self._state_verdict(uuid)
            if fut.done():
                return fut.result()
            if said is not None:
                return self._settle(uuid, *said)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), self.loss_wait_s)
            except asyncio.TimeoutError:
                pass
            if fut.done():
                return fut.result()
            said = await self._state_verdict(uuid)
            if said is not None:
                return self._settle(uuid, *said)
            try:
                state = await self._call(self._state_text, uuid)
            except libvirt.libvirtError as exc:
                state = f"unknown: {_msg(exc)}"
            return LossVerdict(CHANNEL_LOST, f"libvirt gave no reason within "
                                             f"{self.loss_wait_s:g} s (domain {state})")
        finally:
            futs = self._waiters.get(uuid)
            if futs is not None and fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._waiters[uuid]

    async def recover(self, uuid: str, action: str) -> tuple[bool, str]:
        """Carries out `action`; a libvirtd that is away (restarting) is
        waited for, up to `recover_wait_s`, so the action is not lost."""
        if action not in ("reset", "destroy"):
            return False, f"unknown recovery action {action!r}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.recover_wait_s
        while True:
            if self._conn is None or not self.connected:
                if loop.time() >= deadline:
                    return False, (f"libvirtd at {self.uri} not reachable for "
                                   f"{self.recover_wait_s:.0f} s")
                await asyncio.sleep(0.1)
                continue
            try:
                ok, detail = await self._call(self._recover_blocking, uuid.lower(), action)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in _CONNECTION_ERRORS and loop.time() < deadline:
                    LOG.warning("instance %s: recovery %s waits for libvirtd: %s", uuid,
                                action, _msg(exc))
                    await asyncio.sleep(0.2)
                    continue
                ok, detail = False, _msg(exc)
            break
        LOG.warning("instance %s: recovery %s: %s (%s)", uuid, action,
                    "done" if ok else "failed", detail)
        return ok, detail

    # -- connection ---------------------------------------------------------------------
    async def _connect(self) -> None:
        self._gen += 1
        gen = self._gen
        conn, ids = await self._call(self._open_blocking, gen)
        if self._stopping or gen != self._gen:
            await self._call(self._close_blocking, conn, ids)
            return
        self._conn, self._cb_ids = conn, ids
        try:
            await self._relist()
        except BaseException:
            # listing failed (libvirtd went away again): start over from a clean slate
            self._conn, self._cb_ids = None, []
            self._gen += 1
            await self._call(self._close_blocking, conn, ids)
            raise
        if gen == self._gen:  # not lost again meanwhile
            self.connected = True  # and in step with libvirtd's domains
            self.counters["connects"] += 1

    def _open_blocking(self, gen: int) -> tuple[Any, list[int]]:
        conn = libvirt.open(self.uri)
        opaque = (weakref.ref(self), gen)
        ids: list[int] = []
        try:
            conn.setKeepAlive(self.keepalive_s, 3)
            ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, _on_lifecycle, opaque))
            ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, _on_device_added, opaque))
            ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, _on_device_removed, opaque))
            ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, _on_reboot, opaque))
            conn.registerCloseCallback(_on_close, opaque)
        except libvirt.libvirtError:
            self._close_blocking(conn, ids)
            raise
        return conn, ids

    @staticmethod
    def _close_blocking(conn: Any, ids: list[int]) -> None:
        for cb in ids:
            try:
                conn.domainEventDeregisterAny(cb)
            except libvirt.libvirtError:
                pass
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def _reconnect_soon(self) -> None:
        if self._stopping or (self._reconnecting and not self._reconnecting.done()):
            return
        assert self._loop is not None
        self._reconnecting = self._loop.create_task(self._reconnect(), name="libvirt-reconnect")

    async def _reconnect(self) -> None:
        delay, attempts, since = 0.05, 0, time.monotonic()
        while not self._stopping:
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self._connect()
            except libvirt.libvirtError as exc:
                if attempts in (1, 10) or attempts % 100 == 0:
                    LOG.warning("libvirtd at %s still unreachable (%s); retrying every %.1f s",
                                self.uri, _msg(exc), min(delay * 2, self.reconnect_max_s))
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            except Exception:
                LOG.exception("reconnecting to libvirtd at %s", self.uri)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            if not self.connected:  # lost again while listing
                continue
            LOG.warning("reconnected to libvirtd at %s after %.1f s; %d domains with channels",
                        self.uri, time.monotonic() - since, len(self._domains))
            return

    def _on_closed(self, reason: int) -> None:
        conn, self._conn, self.connected = self._conn, None, False
        self._gen += 1  # whatever the old connection still delivers is dropped
        self.counters["disconnects"] += 1
        why = {0: "error", 1: "end of file", 2: "keepalive timeout"}.get(reason, str(reason))
        LOG.warning("lost libvirtd at %s (%s); channels stay as they are, reconnecting",
                    self.uri, why)
        if conn is not None:
            self._spawn(self._call(self._close_blocking, conn, list(self._cb_ids)))
        self._cb_ids = []
        self._reconnect_soon()

    # -- events (asyncio loop) ----------------------------------------------------------
    def _post(self, gen: int, item: tuple[Any, ...]) -> None:
        loop = self._loop
        if loop is None or self._stopping:
            return
        try:
            loop.call_soon_threadsafe(self._on_event, gen, item)
        except RuntimeError:  # the loop is closed
            pass

    def _on_event(self, gen: int, item: tuple[Any, ...]) -> None:
        if self._stopping or gen != self._gen:
            return
        try:
            self.counters["events"] += 1
            what = item[0]
            if what == "closed":
                self._on_closed(item[1])
            elif what == "life":
                self._on_lifecycle(*item[1:])
            elif what == "added":
                self._note(item[1], item[2], f"DEVICE_ADDED {item[3]}")
                self._refresh_soon(item[1])
            elif what == "removed":
                self._on_removed(*item[1:])
            elif what == "reboot":
                self.counters["reboots"] += 1
                self._note(item[1], item[2], "REBOOT")
        except Exception:
            LOG.exception("libvirt event %r not handled", item)

    def _note(self, uuid: str, name: str, what: str) -> None:
        self.recent.append((time.monotonic(), uuid, name, what))
        LOG.debug("domain %s (%s): %s", name, uuid, what)

    def _on_lifecycle(self, uuid: str, name: str, event: int, detail: int) -> None:
        self._note(uuid, name, f"{_LIFECYCLE_NAMES.get(event, event)} {detail}")
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            self._life[uuid] += 1
            self._stops.pop(uuid, None)
            self._refresh_soon(uuid)
        elif event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            self._life[uuid] += 1
            kind, text = stopped_verdict(detail)
            self._stopped(uuid, name, kind, f"domain {name} {text}")
        elif event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
            # Paused on purpose (its state's reason says so: a guest panic
            # pauses the VM too, with another reason): the silence is no fault
            self._spawn(self._paused(uuid, name))
        elif event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
            # guest panic with a pvpanic/isa-debugexit device; the domain may stay
            # (on_crash=preserve), be destroyed (a STOPPED/CRASHED follows) or restart
            text = _CRASHED.get(detail, f"crashed (detail {detail})")
            self._crashed(uuid, f"domain {name} {text}")

    async def _paused(self, uuid: str, name: str) -> None:
        try:
            state, reason = await self._call(self._state_reason_blocking, uuid)
        except libvirt.libvirtError:
            return  # gone meanwhile: its stop event tells
        why = _PLANNED_PAUSES.get(reason) if state == libvirt.VIR_DOMAIN_PAUSED else None
        if why is not None and self._pool is not None:
            LOG.info("domain %s (%s) %s: its heartbeat stands by until it resumes",
                     name, uuid, why)
            self._pool.standby(uuid, f"domain {name} {why}")

    def _state_reason_blocking(self, uuid: str) -> tuple[int, int]:
        state, reason = self._need_conn().lookupByUUIDString(uuid).state()
        return state, reason

    def _stopped(self, uuid: str, name: str, kind: str | None, detail: str) -> None:
        if kind == VM_CRASHED:
            self._crashed(uuid, detail)
        else:
            self._stops[uuid] = _Stop(time.monotonic(), kind, detail)
            self._wake(uuid, LossVerdict(kind, detail))
            if kind is None:
                LOG.info("%s", detail)
            else:
                LOG.warning("%s", detail)
        dom = self._domains.pop(uuid, None)
        if dom is not None:
            reason = detail if kind is None else None
            for spec in dom.offered.values():
                self._withdraw(spec, reason)
        if len(self._stops) > 1024:
            self._prune()

    def _prune(self) -> None:
        """Forgets domains stopped long ago (a host sees many come and go)."""
        now = time.monotonic()
        for uuid in [u for u, st in self._stops.items() if now - st.mono > self.stop_memory_s]:
            del self._stops[uuid]
            if uuid not in self._domains:
                self._life.pop(uuid, None)
                self._reads.pop(uuid, None)

    def _crashed(self, uuid: str, detail: str) -> None:
        prev = self._stops.get(uuid)
        if prev is not None and prev.kind == VM_CRASHED and prev.reported \
                and time.monotonic() - prev.mono < 10.0:
            # CRASHED then STOPPED/CRASHED: one crash
            prev.detail = detail
            return
        stop = _Stop(time.monotonic(), VM_CRASHED, detail)
        self._stops[uuid] = stop
        self.counters["crashes"] += 1
        LOG.warning("%s", detail)
        if self._wake(uuid, LossVerdict(VM_CRASHED, detail)):
            stop.reported = True
            return
        cb = self.on_crash
        if cb is None and self._pool is not None:
            cb = lambda u, d: self._pool.report_fault(u, VM_CRASHED, d)  # noqa: E731
        if cb is None:
            return
        stop.reported = True
        try:
            res = cb(uuid, detail)
            if asyncio.iscoroutine(res):
                self._spawn(res)
        except Exception:
            LOG.exception("on_crash for %s failed", uuid)

    def _on_removed(self, uuid: str, name: str, alias: str) -> None:
        self._note(uuid, name, f"DEVICE_REMOVED {alias}")
        dom = self._domains.get(uuid)
        kind = dom.aliases.pop(alias, None) if dom is not None else None
        if kind is not None and dom is not None:
            spec = dom.offered.pop(kind, None)
            detail = f"domain {name}: {kind} {DETACHED}"
            if kind == HEARTBEAT:
                # the channel's EOF may reach the agent after this event: remember it
                self._stops[uuid] = _Stop(time.monotonic(), None, detail, detached=True)
                self._wake(uuid, LossVerdict(None, detail))
            if spec is not None:
                LOG.info("%s", detail)
                self._withdraw(spec, detail)
        self._refresh_soon(uuid)

    def _wake(self, uuid: str, verdict: LossVerdict) -> bool:
        """Answers the explain_loss calls waiting on `uuid`; whether there were any."""
        woken = False
        for fut in self._waiters.get(uuid, ()):
            if not fut.done():
                fut.set_result(verdict)
                woken = True
        return woken

    def _remembered(self, uuid: str) -> LossVerdict | None:
        stop = self._stops.get(uuid)
        if stop is None:
            return None
        if time.monotonic() - stop.mono > self.stop_memory_s:
            del self._stops[uuid]
            return None
        return self._verdict_of(stop)

    @staticmethod
    def _verdict_of(stop: _Stop) -> LossVerdict:
        if stop.kind == VM_CRASHED:
            if stop.reported:
                return LossVerdict(None, f"{stop.detail}: already reported")
            stop.reported = True
        return LossVerdict(stop.kind, stop.detail)

    def _settle(self, uuid: str, kind: str | None, text: str) -> LossVerdict:
        """A verdict read from the domain's state: remembered like an event's."""
        stop = self._stops.get(uuid)
        if stop is None:
            stop = self._stops[uuid] = _Stop(time.monotonic(), kind, f"domain {text}",
                                             detached=text.endswith(DETACHED))
        return self._verdict_of(stop)

    # -- offering -------------------------------------------------------------------------
    def _withdraw(self, spec: ChannelSpec, reason: str | None) -> None:
        if self._pool is None:
            return
        self.counters["withdrawn"] += 1
        try:
            self._pool.withdraw(spec.kind, spec.key, reason)
        except Exception:
            LOG.exception("withdrawing %s %s", spec.kind, spec.key)

    def _offer(self, spec: ChannelSpec) -> None:
        if self._pool is None:
            return
        self.counters["offered"] += 1
        try:
            self._pool.offer(spec)
        except Exception:
            LOG.exception("offering %s %s", spec.kind, spec.key)

    def _refresh_soon(self, uuid: str) -> None:
        self._spawn(self._refresh(uuid))

    async def _refresh(self, uuid: str) -> None:
        """Reads one domain's live XML and offers/withdraws what changed."""
        life = self._life[uuid]
        gen = self._gen
        self._reads[uuid] += 1
        read = self._reads[uuid]
        try:
            fetched = await self._call(self._fetch_blocking, uuid)
        except libvirt.libvirtError as exc:
            LOG.debug("domain %s: not read (%s)", uuid, _msg(exc))
            return
        if gen != self._gen or life != self._life[uuid]:
            return  # it started or stopped again meanwhile: that event's refresh decides
        if read != self._reads[uuid]:
            return  # a later read (two devices plugged in a row) has the newer XML
        self._apply(fetched)

    async def _relist(self) -> None:
        """All running domains: offers what is new or changed, withdraws the
        channels of domains that stopped while we did not listen."""
        gen = self._gen
        life = dict(self._life)
        reads = dict(self._reads)
        fetched: list[_Fetched] = await self._call(self._list_blocking)
        if gen != self._gen:
            return
        seen = set()
        for f in fetched:
            seen.add(f.uuid)
            if self._life.get(f.uuid, 0) != life.get(f.uuid, 0) \
                    or self._reads.get(f.uuid, 0) != reads.get(f.uuid, 0):
                continue  # an event about it came meanwhile and decided
            self._apply(f)
        for uuid in [u for u in self._domains if u not in seen]:
            if self._life.get(uuid, 0) != life.get(uuid, 0):
                continue
            dom = self._domains.pop(uuid)
            said = await self._state_verdict(uuid)
            reason = f"domain {said[1]}" if said is not None and said[0] is None else None
            LOG.warning("domain %s (%s) stopped while libvirtd was unreachable: %s",
                        dom.name, uuid, reason or "cause unknown")
            for spec in dom.offered.values():
                self._withdraw(spec, reason)

    def _apply(self, f: _Fetched) -> None:
        old = self._domains.get(f.uuid)
        if not f.active or f.xml is None:
            if old is not None:
                del self._domains[f.uuid]
                for spec in old.offered.values():
                    self._withdraw(spec, None)
            return
        try:
            info = domain_xml.parse_domain(f.xml)
        except domain_xml.DomainXMLError as exc:
            LOG.warning("domain %s (%s): %s", f.name, f.uuid, exc)
            return
        if self.on_domain is not None:
            try:
                self.on_domain(info)
            except Exception:
                LOG.exception("on_domain for %s failed", f.uuid)
        dom = _Domain(info.name)
        for ch in info.channels:
            key = info.uuid if ch.kind == HEARTBEAT else info.name
            dom.offered[ch.kind] = ChannelSpec(
                kind=ch.kind, key=key, path=ch.path, inode=f.inodes.get(ch.path, 0),
                uuid=info.uuid if ch.kind == MESSAGING else None)
            if ch.alias:
                dom.aliases[ch.alias] = ch.kind
        dom.problems = info.problems
        if info.problems and (old is None or old.problems != info.problems):
            LOG.warning("domain %s (%s): %s", info.name, info.uuid, "; ".join(info.problems))
        before = old.offered if old is not None else {}
        for kind, spec in before.items():
            if kind not in dom.offered or dom.offered[kind].key != spec.key:
                self._withdraw(spec, f"domain {info.name}: {kind} {DETACHED}")
        for kind, spec in dom.offered.items():
            if before.get(kind) != spec:
                if kind == HEARTBEAT:
                    stop = self._stops.get(f.uuid)
                    if stop is not None and stop.detached:  # plugged in again
                        del self._stops[f.uuid]
                self._offer(spec)
        if dom.offered:
            self._domains[f.uuid] = dom
        else:
            self._domains.pop(f.uuid, None)

    # -- blocking libvirt calls (thread pool) -------------------------------------------
    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._exec, fn, *args)
        except RuntimeError as exc:  # the thread pool is shut: we stopped
            raise libvirt.libvirtError(f"libvirt source stopped ({exc})") from None

    def _spawn(self, coro: Any) -> None:
        if self._loop is None or self._stopping:
            coro.close()
            return
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _need_conn(self) -> Any:
        conn = self._conn
        if conn is None:
            raise libvirt.libvirtError(f"libvirtd at {self.uri} is not reachable")
        return conn

    def _fetch(self, dom: Any) -> _Fetched:
        uuid, name = dom.UUIDString().lower(), dom.name()
        if not dom.isActive():
            return _Fetched(uuid, name, False, None, {})
        xml = dom.XMLDesc(0)
        inodes = {}
        try:
            for ch in domain_xml.parse_domain(xml).channels:
                try:
                    inodes[ch.path] = os.stat(ch.path).st_ino
                except OSError:
                    pass
        except domain_xml.DomainXMLError:
            pass
        return _Fetched(uuid, name, True, xml, inodes)

    def _fetch_blocking(self, uuid: str) -> _Fetched:
        return self._fetch(self._need_conn().lookupByUUIDString(uuid))

    def _list_blocking(self) -> list[_Fetched]:
        out = []
        for dom in self._need_conn().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                out.append(self._fetch(dom))
            except libvirt.libvirtError:
                continue  # stopped while we listed: its event tells
        return out

    async def _state_verdict(self, uuid: str) -> tuple[str | None, str] | None:
        try:
            return await self._call(self._state_blocking, uuid)
        except libvirt.libvirtError:
            return None  # gone (a transient domain) or libvirtd away: the event tells

    def _state_blocking(self, uuid: str) -> tuple[str | None, str] | None:
        dom = self._need_conn().lookupByUUIDString(uuid)
        state, reason = dom.state()
        said = state_verdict(state, reason)
        if said is None and state == libvirt.VIR_DOMAIN_RUNNING:
            # running without a heartbeat port: unplugged (its event missed or to come)
            try:
                info = domain_xml.parse_domain(dom.XMLDesc(0))
            except domain_xml.DomainXMLError:
                return None
            if domain_xml.HEARTBEAT_PORT not in info.ports:
                return None, f"{dom.name()}: heartbeat {DETACHED}"
        return None if said is None else (said[0], f"{dom.name()} {said[1]}")

    def _state_text(self, uuid: str) -> str:
        try:
            state, _ = self._need_conn().lookupByUUIDString(uuid).state()
        except libvirt.libvirtError as exc:
            return f"unknown: {_msg(exc)}"
        return _STATE_NAMES.get(state, str(state))

    def _recover_blocking(self, uuid: str, action: str) -> tuple[bool, str]:
        conn = self._need_conn()
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return False, f"no domain {uuid} at {self.uri}"
        state, _ = dom.state()
        if action == "destroy":
            if not dom.isActive():
                return True, "already shut off"
            dom.destroy()
            return True, "destroyed"
        if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
            try:
                dom.reset(0)
                return True, "reset"
            except libvirt.libvirtError as exc:
                why = f"reset failed ({_msg(exc)})"
        else:
            why = f"domain was {_STATE_NAMES.get(state, state)}"
        persistent = dom.isPersistent()
        # a transient domain is gone once destroyed: start it again from its definition
        xml = None if persistent else dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        done = "started"
        if dom.isActive():
            dom.destroy()
            done = "destroyed and started again"
        if persistent:
            dom.create()
        else:
            conn.createXML(xml, 0)
        return True, f"{why}; {done}"


# a paused domain's state reasons that are someone's decision, not a failure
# (a guest panic, an I/O error, a watchdog or an unknown cause are not)
_PLANNED_PAUSES = {
    libvirt.VIR_DOMAIN_PAUSED_USER: "paused",
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "paused for migration",
    libvirt.VIR_DOMAIN_PAUSED_SAVE: "paused to be saved",
    libvirt.VIR_DOMAIN_PAUSED_DUMP: "paused for a dump",
    libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: "paused for a snapshot",
    libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: "paused from a snapshot",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "paused for post-copy migration",
}

# the connection to libvirtd broke (it restarts): worth waiting for, not a refusal
_CONNECTION_ERRORS = frozenset({libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC,
                                libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN,
                                libvirt.VIR_ERR_INTERNAL_ERROR})


def _msg(exc: Exception) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)
