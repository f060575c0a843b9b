"""Which compute agents are alive, as one controller sees them.

Every compute agent casts ``alive`` to all controllers (a fanout) every
``[heartbeat] agent_report_interval_s``. A host not heard from for
``agent_down_after_s`` is *silent*: its guests are not being heartbeated,
because the agent crashed or hung, the host is down, or the bus is cut.
That is no VM fault (nothing is sent to Masakari or Nova: evacuating a
host whose only trouble is our agent would do harm), but an operator must
know: the controller logs it, exports it (``nfvha_compute_up``) and shows
it in ``GET /v1/hosts`` and on each instance (``host_state``). Whether the
host itself is down is for a second signal to say (hostfailure.py).

Pure bookkeeping: time comes in as arguments (monotonic for deadlines,
wall for what is shown), the controller does the I/O.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Optional

from nfvha.controller.timeutil import iso

UP, SILENT, UNKNOWN = "up", "silent", "unknown"


@dataclasses.dataclass
class HostRecord:
    host: str
    state: str                          # up | silent | unknown (not heard since we started)
    since: datetime                     # when it entered this state
    deadline: float                     # monotonic: silent if not heard by then
    last_seen_at: Optional[datetime] = None
    last_seen: Optional[float] = None   # monotonic, for the quiet time
    agent_started_at: Optional[str] = None
    instances: Optional[int] = None     # as the agent last reported them
    silences: int = 0                   # times it went silent since we started
    restarts: int = 0                   # agent start times seen change
    # instances whose guests get too little CPU to answer in time (a host
    # condition the agent reports, no VM fault)
    starved: list[str] = dataclasses.field(default_factory=list)
    # while silent, what the second signal says (hostfailure.py): checking |
    # agent_only (the host answers) | host_down | held; None: not asked
    host_failure: Optional[str] = None
    host_failure_reason: Optional[str] = None
    management_address: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "state": self.state, "since": iso(self.since),
                "last_seen_at": iso(self.last_seen_at),
                "agent_started_at": self.agent_started_at,
                "instances": self.instances, "silences": self.silences,
                "restarts": self.restarts, "starved": list(self.starved),
                "host_failure": self.host_failure,
                "host_failure_reason": self.host_failure_reason,
                "management_address": self.management_address}


@dataclasses.dataclass(frozen=True)
class Transition:
    host: str
    old: str
    new: str
    quiet_s: Optional[float]            # how long it had been quiet (None: never heard)
    restarted: bool = False             # back with a new agent start time


class TooManyHosts(Exception):
    pass


class HostLiveness:
    def __init__(self, down_after_s: float, max_hosts: int = 10000) -> None:
        if down_after_s <= 0:
            raise ValueError("down_after_s must be positive")
        self.down_after_s = down_after_s
        self.max_hosts = max_hosts
        self.hosts: dict[str, HostRecord] = {}

    def expect(self, host: str, now: float, wall: datetime) -> None:
        """A host the store knows (it has instances) but we have not heard
        from yet: silent if it says nothing within `down_after_s`."""
        if host not in self.hosts and len(self.hosts) < self.max_hosts:
            self.hosts[host] = HostRecord(host, UNKNOWN, wall, now + self.down_after_s)

    def seen(self, host: str, now: float, wall: datetime,
             agent_started_at: Optional[str] = None,
             instances: Optional[int] = None,
             starved: Optional[list[str]] = None) -> Optional[Transition]:
        """A sign of life from `host`; returns its transition to up, if any."""
        rec = self.hosts.get(host)
        if rec is None:
            if len(self.hosts) >= self.max_hosts:
                raise TooManyHosts(f"already tracking {self.max_hosts} hosts")
            rec = self.hosts[host] = HostRecord(host, UNKNOWN, wall, now)
        restarted = (agent_started_at is not None and rec.agent_started_at is not None
                     and agent_started_at != rec.agent_started_at)
        if restarted:
            rec.restarts += 1
        last, rec.last_seen = rec.last_seen, now
        rec.deadline = now + self.down_after_s
        rec.last_seen_at = wall
        if agent_started_at is not None:
            rec.agent_started_at = agent_started_at
        if instances is not None:
            rec.instances = instances
        if starved is not None:
            rec.starved = starved
        if rec.state == UP:
            return Transition(host, UP, UP, None, True) if restarted else None
        old, rec.state, rec.since = rec.state, UP, wall
        return Transition(host, old, UP, None if last is None else now - last, restarted)

    def check(self, now: float, wall: datetime) -> list[Transition]:
        """Hosts whose deadline passed become silent (once each)."""
        out = []
        for rec in self.hosts.values():
            if rec.state != SILENT and now >= rec.deadline:
                out.append(Transition(rec.host, rec.state, SILENT,
                                      None if rec.last_seen is None else now - rec.last_seen))
                rec.state, rec.since = SILENT, wall
                rec.silences += 1
        return out

    def next_deadline(self) -> Optional[float]:
        pending = [r.deadline for r in self.hosts.values() if r.state != SILENT]
        return min(pending) if pending else None

    def state(self, host: str) -> str:
        rec = self.hosts.get(host)
        return rec.state if rec is not None else UNKNOWN

    def forget(self, host: str) -> bool:
        return self.hosts.pop(host, None) is not None
