"""The active/passive scenario sees every VRRP event once, even when they
arrive out of time order (the cause of the backup's "missed VIP add").

VrrpPair appends keepalived's notify-fifo states at once, but the VIP
add/remove come from the rtnetlink thread through a copy thread, a few ms
later: the backup's "vip add" (stamped first) is often appended after its
"MASTER". A follower slicing the time-sorted list by position skipped it.
"""
from __future__ import annotations

import asyncio
import threading

from nfvha.verify.deploy.keepalived import VrrpEvent
from nfvha.verify.scenarios.active_passive import follow_vrrp
from nfvha.verify.timeline import Record


class EventLog:
    """VrrpPair's event list and its two readers, nothing else (same code shape)."""

    def __init__(self) -> None:
        self.events: list[VrrpEvent] = []
        self._lock = threading.Lock()

    def append(self, e: VrrpEvent) -> None:
        with self._lock:
            self.events.append(e)

    def events_after(self, index: int):
        with self._lock:
            return list(self.events[index:]), len(self.events)


async def test_a_vip_add_appended_after_the_master_state_is_still_the_failover():
    log, rec = EventLog(), Record("active-passive", 0.0)
    rec.mark("fault", 10.0, "kill -9")
    stop = asyncio.Event()
    task = asyncio.create_task(follow_vrrp(log, rec, "a", "b", stop, period=0.001))
    log.append(VrrpEvent(10.001, 0, "a", "state", "FAULT"))
    log.append(VrrpEvent(10.060, 0, "b", "state", "MASTER"))
    await asyncio.sleep(0.02)                       # the follower has consumed these
    # stamped before MASTER, appended after it (the copy thread's delay)
    log.append(VrrpEvent(10.059, 0, "b", "vip", "add"))
    log.append(VrrpEvent(10.0005, 0, "a", "vip", "del"))
    await asyncio.sleep(0.02)
    log.append(VrrpEvent(10.300, 0, "a", "state", "BACKUP"))
    stop.set()
    await task
    fo = rec.first("failover")
    assert fo is not None and fo.t == 10.059 and fo.detail == "VIP now on node b"
    # detection is the earliest of the master's give-up signals, whatever arrived first
    assert rec.first("detected").t == 10.0005
    assert rec.first("alarm").t == 10.001
    assert rec.first("instance_back").t == 10.300
    # every event recorded exactly once
    assert len(rec.all("vrrp")) == 5
