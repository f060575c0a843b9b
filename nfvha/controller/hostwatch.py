"""The controller's watch over compute agents: their signs of life (``alive``,
a ``hello``) checked and recorded in hosts.py's ``HostLiveness``, a scan
that flags the silent ones, and each change of a host's state logged,
exported, told to the listeners and to the host-failure monitor. hosts.py
stays pure bookkeeping; the I/O is here.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Optional

from nfvha.controller import validate
from nfvha.controller.hosts import SILENT, UNKNOWN, HostLiveness, TooManyHosts, Transition
from nfvha.controller.metrics import ControllerMetrics
from nfvha.controller.store import Store
from nfvha.controller.timeutil import iso, utcnow

LOG = logging.getLogger(__name__)

Db = Callable[..., Awaitable[Any]]  # runs a Store method on a DB thread
Notify = Callable[[dict[str, Any]], None]  # tells the controller's listeners

MAX_STARVED_LISTED = 10000  # instances one agent may list as starved


def started_at_ok(value: Any) -> bool:
    """An agent's start time as it may report it (absent, or a short string)."""
    return value is None or (isinstance(value, str) and len(value) <= 64)


def _starved_ok(value: Any) -> bool:
    return value is None or (
        isinstance(value, list) and len(value) <= MAX_STARVED_LISTED
        and all(isinstance(u, str) and 0 < len(u) <= 64 for u in value))


class HostWatch:
    def __init__(self, hosts: Optional[HostLiveness], metrics: ControllerMetrics, db: Db,
                 notify: Notify, bus: Any) -> None:
        self.hosts = hosts  # None: liveness not tracked
        self.metrics = metrics
        self._db = db
        self._notify = notify
        self.bus = bus  # retiring a host is fanned out to the other controllers
        # Host failure (hostfailure.py): tells a dead host from a dead agent by a
        # second signal; None: off. Set by the wiring (hostfailure.build).
        self.host_failure: Any = None
        self.store: Optional[Store] = None
        self._task: Optional[asyncio.Task[None]] = None

    async def start(self, store: Store) -> None:
        self.store = store
        if self.hosts is not None:
            # hosts with instances on record must speak up, even if they died
            # before we started
            now, wall = time.monotonic(), utcnow()
            for host in await self._db(store.hosts_with_instances):
                self.hosts.expect(host, now, wall)
            self._task = asyncio.create_task(self._scan(), name="nfvha-hosts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # --- signs of life -----------------------------------------------------
    def alive(self, host: Any, agent_started_at: Any = None, instances: Any = None,
              starved: Any = None, management_address: Any = None) -> dict[str, Any]:
        """The bus method's work (Controller.alive): checked, then recorded."""
        if not isinstance(host, str) or not host or len(host) > validate.MAX_HOST \
                or not started_at_ok(agent_started_at) \
                or not isinstance(instances, (int, type(None))) or isinstance(instances, bool) \
                or not _starved_ok(starved) \
                or not (management_address is None or (
                    isinstance(management_address, str) and len(management_address) <= 255
                    and validate.is_text(management_address))):
            self.metrics.invalid.labels("alive").inc()
            return {"ok": False, "error": "host, agent_started_at, instances, starved and "
                                          "management_address have the wrong type or size"}
        if self.host_failure is not None:
            self.host_failure.address_reported(host, management_address)
        self.seen(host, agent_started_at, instances, starved)
        if starved is not None:
            self.metrics.starved.labels(host).set(len(starved))
        return {"ok": True}

    def seen(self, host: str, agent_started_at: Optional[str] = None,
             instances: Optional[int] = None, starved: Optional[list[str]] = None) -> None:
        """A sign of life from `host` (checked by the caller)."""
        if self.hosts is None:
            return
        try:
            tr = self.hosts.seen(host, time.monotonic(), utcnow(), agent_started_at,
                                 instances, starved)
        except TooManyHosts as exc:
            self.metrics.invalid.labels("alive").inc()
            LOG.warning("compute %r not tracked: %s", host, exc)
            return
        self.metrics.compute_last_seen.labels(host).set(time.time())
        if tr is not None:
            self._changed(tr)

    def _changed(self, tr: Transition) -> None:
        if tr.new == SILENT:
            self.metrics.compute_up.labels(tr.host).set(0)
            self.metrics.compute_silences.labels(tr.host).inc()
            quiet = ("never heard since this controller started" if tr.quiet_s is None
                     else f"silent for {tr.quiet_s:.1f} s")
            LOG.warning("compute %s %s: its guests are not being heartbeated "
                        "(agent down or hung, host down, or the bus cut)", tr.host, quiet)
        else:
            self.metrics.compute_up.labels(tr.host).set(1)
            if tr.old == SILENT:
                LOG.warning("compute %s reports again%s", tr.host,
                            " (agent restarted)" if tr.restarted else "")
            elif tr.restarted:
                LOG.info("compute %s: agent restarted", tr.host)
            else:
                LOG.info("compute %s reporting", tr.host)
        self._notify({"type": "host", "host": tr.host, "old": tr.old, "state": tr.new,
                      "quiet_s": tr.quiet_s, "restarted": tr.restarted})
        if self.host_failure is not None and self.hosts is not None:
            if tr.new == SILENT:  # is the host down too? (a second signal decides)
                rec = self.hosts.hosts.get(tr.host)
                episode = (rec.agent_started_at or iso(rec.since) or "") if rec else ""
                self.host_failure.agent_silent(tr.host, episode)
            else:
                self.host_failure.agent_up(tr.host)

    async def _scan(self) -> None:
        assert self.hosts is not None
        # a scan of the hosts is cheap: a silence is flagged within 1/10 of
        # the allowance (at most 0.25 s) after its deadline
        step = min(0.25, self.hosts.down_after_s / 10)
        try:
            while True:
                await asyncio.sleep(step)
                for tr in self.hosts.check(time.monotonic(), utcnow()):
                    self._changed(tr)
                if self.host_failure is not None:
                    self.host_failure.tick()  # rechecks of hosts whose agent stays silent
        finally:
            if self.host_failure is not None:  # stop(): no probe outlives the controller
                await self.host_failure.aclose()

    # --- what the REST API shows and does ----------------------------------
    def state(self, host: str) -> str:
        """up | silent | unknown; shown as an instance's host_state."""
        return self.hosts.state(host) if self.hosts is not None else UNKNOWN

    async def list_hosts(self) -> list[dict[str, Any]]:
        """Every compute heard of or expected, with its instances on record."""
        assert self.store is not None
        counts = await self._db(self.store.host_instance_counts)
        known = dict(self.hosts.hosts) if self.hosts is not None else {}
        out = []
        for host in sorted(set(counts) | set(known)):
            rec = known.get(host)
            d = rec.as_dict() if rec is not None else {
                "host": host, "state": UNKNOWN, "since": None, "last_seen_at": None,
                "agent_started_at": None, "instances": None, "silences": 0, "restarts": 0,
                "starved": []}
            d["instances_on_record"] = counts.get(host, 0)
            out.append(d)
        return out

    async def forget_host(self, host: str) -> bool:
        """An operator retired `host`: drop it and its instances on record,
        here and (by a fanout) in every other controller's view."""
        assert self.store is not None
        dropped = await self._db(self.store.forget_host_instances_except, host, [])
        known = self.retired(host)
        if self.bus is not None:
            await self.bus.fanout_controller("host_retired", host=host)
        return known or dropped > 0

    def retired(self, host: Any) -> bool:
        """`host` was retired (here or by another controller): forget it."""
        if not isinstance(host, str):
            return False
        known = self.hosts.forget(host) if self.hosts is not None else False
        self.metrics.forget_host(host)
        return known
