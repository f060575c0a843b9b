"""The libvirt instance source against a real libvirtd and real (TCG)
domains: offers, withdrawals with their reasons, explaining a lost channel,
the recovery actions, a libvirtd restart underneath."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import libvirt
import pytest
from conftest import missing, until
from libvirt_domains import Domains, eof

from nfvha.compute.pool import ChannelSpec
from nfvha.compute.sources import CHANNEL_LOST, VM_CRASHED, LossVerdict
from nfvha.compute.sources.libvirt import LibvirtSource, state_verdict, stopped_verdict


class RecordingPool:
    """What a source tells the pool (ChannelPool's interface), in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.offered: dict[tuple[str, str], ChannelSpec] = {}
        self.faults: list[tuple[str, str, str]] = []

    def offer(self, spec: ChannelSpec) -> None:
        self.events.append(("offer", spec))
        self.offered[(spec.kind, spec.key)] = spec

    def withdraw(self, kind: str, key: str, reason: str | None = None) -> None:
        self.events.append(("withdraw", kind, key, reason))
        self.offered.pop((kind, key), None)

    def report_fault(self, uuid: str, kind: str, detail: str) -> None:
        self.faults.append((uuid, kind, detail))

    def withdrawn(self, kind: str, key: str) -> list[str | None]:
        return [e[3] for e in self.events if e[0] == "withdraw" and e[1:3] == (kind, key)]

    def about(self, *keys: str) -> list[tuple]:
        return [e for e in self.events
                if (e[1].key if e[0] == "offer" else e[2]) in keys]


# ---------------------------------------------------------------------- pure
def test_event_and_state_verdicts() -> None:
    assert stopped_verdict(libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED) == (None, "destroyed")
    assert stopped_verdict(libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED)[0] == VM_CRASHED
    assert stopped_verdict(libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED)[0] == VM_CRASHED
    for d in (libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
              libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED,
              libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT):
        assert stopped_verdict(d)[0] is None
    assert stopped_verdict(99)[0] == CHANNEL_LOST  # a detail we do not know: the loss stands
    assert state_verdict(libvirt.VIR_DOMAIN_RUNNING, 1) is None  # cannot say yet: wait
    assert state_verdict(libvirt.VIR_DOMAIN_PAUSED, 2) is None
    assert state_verdict(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN) == \
        (None, "shut down")
    assert state_verdict(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED)[0] == \
        VM_CRASHED
    assert state_verdict(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN)[0] == \
        CHANNEL_LOST
    assert state_verdict(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DAEMON)[0] == \
        CHANNEL_LOST
    assert state_verdict(libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED) == \
        (VM_CRASHED, "crashed (guest kernel panic)")


async def test_unreachable_libvirtd_is_no_crash_and_explains_nothing(tmp_path) -> None:
    uri = f"qemu+unix:///system?socket={tmp_path}/no-libvirtd.sock"
    pool = RecordingPool()
    src = LibvirtSource(uri, loss_wait_s=0.2)
    await src.start(pool)  # logs, keeps trying in the background
    try:
        assert not src.connected and pool.events == []
        v = await src.explain_loss("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
        assert v.kind == CHANNEL_LOST and "no reason" in v.detail
        ok, detail = await src.recover("3f2504e0-4f89-11d3-9a0c-0305e82c3301", "reset")
        assert not ok and "not reachable" in detail
        await asyncio.sleep(0.3)  # a few reconnect attempts
        assert not src.connected and src.counters["connects"] == 0
    finally:
        await src.stop()
    # a late question after stop() still gets an answer, not an exception
    v = await src.explain_loss("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    assert v.kind == CHANNEL_LOST


# ---------------------------------------------------------------------- real libvirtd


@pytest.fixture
def domains(libvirtd):
    d = Domains(libvirtd.uri)
    yield d
    d.cleanup()


@pytest.fixture
async def source(libvirtd):
    """A started source over a recording pool: (source, pool, on_crash calls)."""
    pool = RecordingPool()
    crashes: list[tuple[str, str]] = []
    src = LibvirtSource(libvirtd.uri, loss_wait_s=5.0,
                        on_crash=lambda u, d: crashes.append((u, d)))
    await src.start(pool)
    yield src, pool, crashes
    await src.stop()


def spec_of(d, kind: str) -> ChannelSpec:
    if kind == "heartbeat":
        return ChannelSpec("heartbeat", d.uuid, d.hb_path, inode=os.stat(d.hb_path).st_ino)
    return ChannelSpec("messaging", d.name, d.msg_path, inode=os.stat(d.msg_path).st_ino,
                       uuid=d.uuid)


@pytest.mark.system
@pytest.mark.slow
async def test_offers_running_domains_and_those_that_start(libvirtd, domains) -> None:
    a = await domains.start("a", messaging=True)
    pool = RecordingPool()
    src = LibvirtSource(libvirtd.uri)
    await src.start(pool)
    try:
        # what runs has been offered when start() returns
        assert pool.offered[("heartbeat", a.uuid)] == spec_of(a, "heartbeat")
        assert pool.offered[("messaging", a.name)] == spec_of(a, "messaging")
        b = await domains.start("b")  # heartbeat port only (also the single-port layout)
        await until(lambda: ("heartbeat", b.uuid) in pool.offered, 15)
        assert pool.offered[("heartbeat", b.uuid)] == spec_of(b, "heartbeat")
        assert ("messaging", b.name) not in pool.offered
        # a domain without our ports is not offered anything
        c = await domains.start("c", heartbeat=False)
        await until(lambda: any(n == c.name and "STARTED" in w for _, _, n, w in src.recent), 15)
        await asyncio.sleep(0.2)
        assert pool.about(c.uuid, c.name) == []
        # the offered path is QEMU's listening socket
        _, w = await asyncio.open_unix_connection(b.hb_path)
        w.close()
        assert pool.faults == [] and all(e[0] == "offer" for e in pool.about(a.uuid, a.name))
    finally:
        await src.stop()


@pytest.mark.system
@pytest.mark.slow
async def test_destroyed_domain_is_withdrawn_with_its_reason_and_is_no_fault(
        domains, source) -> None:
    src, pool, crashes = source
    a = await domains.start("d", messaging=True)
    await until(lambda: ("messaging", a.name) in pool.offered, 15)
    closed = await eof(a.hb_path)
    t0 = time.monotonic()
    destroy = asyncio.ensure_future(asyncio.to_thread(lambda: a.dom.destroy()))
    await closed  # QEMU closed the channel: the agent asks why at once
    verdict = await src.explain_loss(a.uuid)
    took = time.monotonic() - t0
    await destroy
    assert verdict == LossVerdict(None, f"domain {a.name} destroyed"), verdict
    await until(lambda: pool.withdrawn("heartbeat", a.uuid), 10)
    assert pool.withdrawn("heartbeat", a.uuid) == [f"domain {a.name} destroyed"]
    assert pool.withdrawn("messaging", a.name) == [f"domain {a.name} destroyed"]
    assert crashes == [] and pool.faults == []
    print(f"destroy -> explained in {took * 1000:.0f} ms")


@pytest.mark.system
@pytest.mark.slow
async def test_killed_qemu_is_vm_crashed_once(domains, source) -> None:
    src, pool, crashes = source
    a = await domains.start("k")
    await until(lambda: ("heartbeat", a.uuid) in pool.offered, 15)
    closed = await eof(a.hb_path)
    t0 = time.monotonic()
    os.kill(a.qemu_pid(), signal.SIGKILL)
    await closed
    verdict = await src.explain_loss(a.uuid)
    took = time.monotonic() - t0
    if crashes:  # the event beat our EOF: on_crash reported it, the loss adds nothing
        assert verdict.kind is None and "already reported" in verdict.detail
    else:
        assert verdict == LossVerdict(VM_CRASHED, f"domain {a.name} failed (its QEMU died)")
    # reported exactly once, whichever way
    assert (verdict.kind == VM_CRASHED) + len(crashes) == 1
    again = await src.explain_loss(a.uuid)
    assert again.kind is None and "already reported" in again.detail
    await until(lambda: pool.withdrawn("heartbeat", a.uuid), 10)
    assert pool.withdrawn("heartbeat", a.uuid) == [None]  # no Standby: a crash is a fault
    assert pool.faults == []  # on_crash given: the pool's report_fault is not used
    print(f"kill -9 -> explained in {took * 1000:.0f} ms")


@pytest.mark.system
@pytest.mark.slow
async def test_crash_nobody_asks_about_goes_to_the_pools_report_fault(libvirtd, domains) -> None:
    pool = RecordingPool()
    src = LibvirtSource(libvirtd.uri)  # no on_crash: the pool's report_fault
    await src.start(pool)
    try:
        a = await domains.start("u", heartbeat=False)  # no channel at all: only libvirt knows
        await until(lambda: any(n == a.name and "STARTED" in w for _, _, n, w in src.recent), 15)
        t0 = time.monotonic()
        os.kill(a.qemu_pid(), signal.SIGKILL)
        await until(lambda: pool.faults, 10)
        took = time.monotonic() - t0
        assert pool.faults == [(a.uuid, VM_CRASHED, f"domain {a.name} failed (its QEMU died)")]
        v = await src.explain_loss(a.uuid)
        assert v.kind is None and "already reported" in v.detail
        print(f"kill -9 -> on_crash in {took * 1000:.0f} ms")
    finally:
        await src.stop()


@pytest.mark.system
@pytest.mark.slow
async def test_reset_keeps_the_domain_running_and_its_channel(libvirtd, domains) -> None:
    pool = RecordingPool()
    src = LibvirtSource(libvirtd.uri, loss_wait_s=0.3)
    await src.start(pool)
    try:
        a = await domains.start("r")
        await until(lambda: ("heartbeat", a.uuid) in pool.offered, 15)
        before = list(pool.events)
        assert await src.recover(a.uuid, "reset") == (True, "reset")
        await until(lambda: any(n == a.name and w == "REBOOT" for _, _, n, w in src.recent), 10)
        assert a.state() == libvirt.VIR_DOMAIN_RUNNING
        await asyncio.sleep(0.2)
        assert pool.events == before  # the channel stays: nothing withdrawn or re-offered
        # a running domain does not explain a lost channel: the loss stands
        t0 = time.monotonic()
        v = await src.explain_loss(a.uuid)
        assert v.kind == CHANNEL_LOST and "running" in v.detail
        assert time.monotonic() - t0 >= 0.3
        v = await src.explain_loss("00000000-0000-4000-8000-000000000000")
        assert v.kind == CHANNEL_LOST
        assert await src.recover("00000000-0000-4000-8000-000000000000", "reset") == \
            (False, f"no domain 00000000-0000-4000-8000-000000000000 at {libvirtd.uri}")
        assert (await src.recover(a.uuid, "reboot"))[0] is False
    finally:
        await src.stop()


@pytest.mark.system
@pytest.mark.slow
async def test_destroy_action_then_reset_starts_it_again(domains, source) -> None:
    src, pool, crashes = source
    a = await domains.start("p", persistent=True)
    await until(lambda: ("heartbeat", a.uuid) in pool.offered, 15)
    assert await src.recover(a.uuid, "destroy") == (True, "destroyed")
    assert a.state() == libvirt.VIR_DOMAIN_SHUTOFF
    await until(lambda: pool.withdrawn("heartbeat", a.uuid), 10)
    assert pool.withdrawn("heartbeat", a.uuid) == [f"domain {a.name} destroyed"]
    v = await src.explain_loss(a.uuid)
    assert v == LossVerdict(None, f"domain {a.name} destroyed")
    assert await src.recover(a.uuid, "destroy") == (True, "already shut off")
    # reset of a domain that is off: started
    assert await src.recover(a.uuid, "reset") == (True, "domain was shut off; started")
    await until(lambda: ("heartbeat", a.uuid) in pool.offered, 15)
    assert a.state() == libvirt.VIR_DOMAIN_RUNNING
    assert pool.offered[("heartbeat", a.uuid)] == spec_of(a, "heartbeat")
    assert crashes == [] and pool.faults == []


@pytest.mark.system
@pytest.mark.slow
async def test_libvirtd_restart_under_the_source(libvirtd, domains, source) -> None:
    if libvirtd.reused:
        missing("the running libvirtd is not ours to restart")
    src, pool, crashes = source
    a = await domains.start("l", messaging=True)
    await until(lambda: ("messaging", a.name) in pool.offered, 15)
    before = list(pool.events)
    await asyncio.to_thread(libvirtd.restart_libvirtd)
    await until(lambda: src.counters["connects"] >= 2 and src.connected, 30)
    assert src.counters["disconnects"] >= 1
    # nothing changed for the running domain: no withdrawal, no false alarm
    assert pool.events == before and crashes == [] and pool.faults == []
    # events flow on the new connection
    await asyncio.to_thread(a.settled)
    await asyncio.to_thread(lambda: a.dom.destroy())
    await until(lambda: pool.withdrawn("heartbeat", a.uuid), 10)
    assert pool.withdrawn("heartbeat", a.uuid) == [f"domain {a.name} destroyed"]
    b = await domains.start("l2")
    await until(lambda: ("heartbeat", b.uuid) in pool.offered, 15)


@pytest.mark.system
@pytest.mark.slow
async def test_a_reset_asked_while_libvirtd_restarts_waits_for_it_and_is_carried_out(
        libvirtd, domains, source) -> None:
    if libvirtd.reused:
        missing("the running libvirtd is not ours to restart")
    src, pool, crashes = source
    a = await domains.start("w", persistent=True)
    await until(lambda: ("heartbeat", a.uuid) in pool.offered, 15)
    await asyncio.to_thread(a.settled)
    restart = asyncio.create_task(asyncio.to_thread(libvirtd.restart_libvirtd))
    await until(lambda: not src.connected, 30)
    ok, detail = await src.recover(a.uuid, "reset")  # asked while libvirtd is away
    await restart
    assert (ok, detail) == (True, "reset"), detail
    assert a.state() == libvirt.VIR_DOMAIN_RUNNING and crashes == []
