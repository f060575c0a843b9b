"""A real guest under libvirt, end to end through the compute side's real
parts: its heartbeat channel is hot-plugged (`nfvha attach`), the libvirt
source offers it to the real ChannelPool, the guest agent registers; a
libvirt reset reboots it and it registers again, without a fault; its QEMU
killed, the loss is explained as vm_crashed."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest
from conftest import until
from libvirt_domains import Domains, is_socket

from nfvha.compute import domain_xml
from nfvha.compute.hotplug import attach_channels
from nfvha.compute.pool import ChannelPool
from nfvha.compute.session import HeartbeatHooks
from nfvha.compute.sources import VM_CRASHED
from nfvha.compute.sources.libvirt import LibvirtSource
from nfvha.protocol import host

pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.fixture
def domains(libvirtd):
    d = Domains(libvirtd.uri)
    yield d
    d.cleanup()


async def test_hotplugged_guest_registers_survives_a_reset_and_its_crash_is_explained(
        libvirtd, domains, guest_image) -> None:
    from nfvha.demo.guest_image import kernel_cmdline

    outputs: list[tuple[str, object]] = []
    pool = ChannelPool(heartbeat_hooks=HeartbeatHooks(
        on_output=lambda s, out, mono: outputs.append((s.uuid, out))))
    crashes: list[tuple[str, str]] = []
    src = LibvirtSource(libvirtd.uri, loss_wait_s=5.0,
                        on_crash=lambda u, d: crashes.append((u, d)))
    pool.start()
    await src.start(pool)
    d = domains.new("g")

    def registrations() -> set[int]:
        """The guest agent's invocations seen enabled (a reboot makes a new one)."""
        return {o.invocation_id for u, o in outputs if u == d.uuid
                and isinstance(o, host.StateChanged) and o.state == "enabled"}

    def faults() -> list:
        return [o for u, o in outputs if u == d.uuid and isinstance(o, host.Fault)]

    try:
        xml = domain_xml.minimal_domain(
            d.name, d.uuid, memory_mib=256, kernel=str(guest_image.kernel),
            initrd=str(guest_image.initrd),
            # 1 s, not 300 ms: what this checks is registration across a reset;
            # a TCG guest still booting on a loaded CI host missed a 300 ms
            # window once (a true miss at that interval, not this test's subject)
            cmdline=kernel_cmdline(interval_ms=1000, wait_ports=()),
            console_log=str(domains.dir / f"{d.name}.console"))
        await asyncio.to_thread(lambda: domains.conn().createXML(xml, 0))
        # booted with no nfvha port: `nfvha attach` plugs one in
        r = await asyncio.to_thread(attach_channels, domains.conn(), d.name,
                                    channels_dir=domains.dir)
        assert r.changed and is_socket(d.hb_path)
        await until(lambda: d.uuid in pool.heartbeat, 10)
        await until(lambda: len(registrations()) == 1, 90)  # TCG boot on a loaded machine
        first = registrations()

        # recovery "reset": the agent puts the session on standby first (contract)
        pool.heartbeat[d.uuid].standby("nfvha resets the VM")
        assert await src.recover(d.uuid, "reset") == (True, "reset")
        await until(lambda: registrations() - first, 90)  # rebooted and registered again
        assert faults() == []
        assert d.uuid in pool.heartbeat  # the channel survived the reset

        os.kill(d.qemu_pid(), signal.SIGKILL)
        await until(lambda: faults(), 10)
        assert [f.kind for f in faults()] == ["channel_lost"]
        verdict = await src.explain_loss(d.uuid)  # what the agent asks next
        if crashes:
            assert verdict.kind is None and "already reported" in verdict.detail
        else:
            assert verdict.kind == VM_CRASHED, verdict
        assert (verdict.kind == VM_CRASHED) + len(crashes) == 1
        await until(lambda: d.uuid not in pool.heartbeat, 10)  # withdrawn, forgotten
    finally:
        await src.stop()
        await pool.stop()


async def test_guest_kernel_panic_is_vm_crashed_once(libvirtd, domains, guest_image) -> None:
    """pvpanic: the guest's panic is libvirt's CRASHED/PANICKED event, then
    (on_crash destroy) STOPPED/CRASHED and the channel closes: one vm_crashed."""
    from nfvha.demo.guest_image import CONTROL_PORT, kernel_cmdline

    outputs: list[tuple[str, object]] = []
    pool = ChannelPool(heartbeat_hooks=HeartbeatHooks(
        on_output=lambda s, out, mono: outputs.append((s.uuid, out))))
    crashes: list[tuple[str, str]] = []
    src = LibvirtSource(libvirtd.uri, loss_wait_s=5.0,
                        on_crash=lambda u, d: crashes.append((u, d)))
    pool.start()
    await src.start(pool)
    d = domains.new("panic")
    control = str(domains.dir / f"control.{d.uuid[:8]}.sock")
    try:
        xml = domain_xml.minimal_domain(
            d.name, d.uuid, memory_mib=256, kernel=str(guest_image.kernel),
            initrd=str(guest_image.initrd),
            cmdline=kernel_cmdline(interval_ms=300), panic="isa",
            channels={"cgcs.heartbeat": d.hb_path, CONTROL_PORT: control},
            console_log=str(domains.dir / f"{d.name}.console"))
        await asyncio.to_thread(lambda: domains.conn().createXML(xml, 0))
        await until(lambda: any(u == d.uuid and isinstance(o, host.StateChanged)
                                and o.state == "enabled" for u, o in outputs), 90)
        reader, writer = await asyncio.open_unix_connection(control)
        writer.write(b"panic\n")
        assert (await asyncio.wait_for(reader.readline(), 30)).strip() == b"ok panic"
        # the heartbeat session sees its channel close (libvirt destroys the domain)
        await until(lambda: any(u == d.uuid and isinstance(o, host.Fault)
                                for u, o in outputs), 30)
        verdict = await src.explain_loss(d.uuid)
        writer.close()
        if crashes:  # the panic event came first: on_crash reported it
            assert crashes == [(d.uuid, f"domain {d.name} crashed (guest kernel panic)")]
            assert verdict.kind is None and "already reported" in verdict.detail
        else:
            assert verdict.kind == VM_CRASHED and "panic" in verdict.detail, verdict
        assert any(n == d.name and w.startswith("CRASHED") for _, _, n, w in src.recent)
        assert src.counters["crashes"] == 1  # CRASHED then STOPPED/CRASHED: one crash
    finally:
        await src.stop()
        await pool.stop()
