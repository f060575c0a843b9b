"""Hot-plugging nfvha's channels into a running libvirt domain and out again
(compute/hotplug.py), followed by the libvirt source: real libvirtd, real
TCG domains."""
from __future__ import annotations

import asyncio

import libvirt
import pytest
from conftest import until
from libvirt_domains import Domains, eof, is_socket
from test_libvirt_source import RecordingPool

from nfvha.compute import domain_xml
from nfvha.compute.hotplug import HotplugError, attach_channels, detach_channels
from nfvha.compute.sources import LossVerdict
from nfvha.compute.sources.libvirt import LibvirtSource

pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.fixture
def domains(libvirtd):
    d = Domains(libvirtd.uri)
    yield d
    d.cleanup()


def config_ports(d) -> frozenset[str]:
    return domain_xml.parse_domain(d.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).ports


async def test_attach_and_detach_on_a_running_domain(libvirtd, domains) -> None:
    pool = RecordingPool()
    src = LibvirtSource(libvirtd.uri, loss_wait_s=5.0)
    await src.start(pool)
    try:
        d = await domains.start("h", heartbeat=False, persistent=True)  # controller, no ports
        await until(lambda: any(n == d.name and "STARTED" in w for _, _, n, w in src.recent), 15)
        conn = domains.conn()

        r = await asyncio.to_thread(attach_channels, conn, d.name, messaging=True,
                                    channels_dir=domains.dir)
        assert r.changed == [f"attached cgcs.heartbeat at {d.hb_path} (live+config)",
                             f"attached cgcs.messaging at {d.msg_path} (live+config)"], r
        assert is_socket(d.hb_path) and is_socket(d.msg_path)
        # the source hears DEVICE_ADDED and offers both
        await until(lambda: ("heartbeat", d.uuid) in pool.offered
                    and ("messaging", d.name) in pool.offered, 10)
        assert pool.offered[("heartbeat", d.uuid)].path == d.hb_path
        assert pool.offered[("messaging", d.name)].uuid == d.uuid
        assert any(n == d.name and w.startswith("DEVICE_ADDED") for _, _, n, w in src.recent)
        assert {"cgcs.heartbeat", "cgcs.messaging"} <= config_ports(d)

        # again: nothing to do, by name or by uuid
        r = await asyncio.to_thread(attach_channels, conn, d.uuid, messaging=True,
                                    channels_dir=domains.dir)
        assert r.changed == [] and len(r.unchanged) == 4, r

        closed = await eof(d.hb_path)
        r = await asyncio.to_thread(detach_channels, conn, d.uuid)
        assert r.changed == ["detached cgcs.heartbeat (live)", "detached cgcs.messaging (live)",
                             "detached cgcs.heartbeat (config)",
                             "detached cgcs.messaging (config)",
                             f"removed stale socket {d.hb_path}",
                             f"removed stale socket {d.msg_path}"], r
        assert not is_socket(d.hb_path) and not is_socket(d.msg_path)
        await closed
        # the loss that follows is explained: detached, no fault
        v = await src.explain_loss(d.uuid)
        assert v == LossVerdict(None, f"domain {d.name}: heartbeat channel detached"), v
        await until(lambda: pool.withdrawn("messaging", d.name), 10)
        assert pool.withdrawn("heartbeat", d.uuid) == \
            [f"domain {d.name}: heartbeat channel detached"]
        assert pool.withdrawn("messaging", d.name) == \
            [f"domain {d.name}: messaging channel detached"]
        assert not {"cgcs.heartbeat", "cgcs.messaging"} & config_ports(d)
        assert d.state() == libvirt.VIR_DOMAIN_RUNNING

        r = await asyncio.to_thread(detach_channels, conn, d.name)
        assert r.changed == [] and r.unchanged, r
        assert pool.faults == []
    finally:
        await src.stop()


async def test_attach_refused_without_a_virtio_serial_controller(domains) -> None:
    d = await domains.start("n", heartbeat=False, virtio_serial=False)
    conn = domains.conn()
    with pytest.raises(HotplugError, match="no virtio-serial controller"):
        await asyncio.to_thread(attach_channels, conn, d.name, channels_dir=domains.dir)
    assert not is_socket(d.hb_path)
    assert "cgcs.heartbeat" not in domain_xml.parse_domain(d.dom.XMLDesc(0)).ports
    with pytest.raises(HotplugError, match="no domain 'nfvha-no-such-domain'"):
        await asyncio.to_thread(attach_channels, conn, "nfvha-no-such-domain")


async def test_attach_to_a_transient_domain_is_live_only_and_adds_what_is_missing(
        domains) -> None:
    d = await domains.start("t")  # has its heartbeat port already
    conn = domains.conn()
    r = await asyncio.to_thread(attach_channels, conn, d.name, messaging=True,
                                channels_dir=domains.dir)
    assert r.changed == [f"attached cgcs.messaging at {d.msg_path} (live)"], r
    assert r.unchanged == [f"cgcs.heartbeat live: {d.hb_path}"]
    assert is_socket(d.msg_path)
    r = await asyncio.to_thread(detach_channels, conn, d.name, ports=("cgcs.messaging",))
    assert r.changed == ["detached cgcs.messaging (live)",
                         f"removed stale socket {d.msg_path}"], r
    assert is_socket(d.hb_path)  # the other port stays
    # a socket path the kernel cannot bind is refused before libvirt is asked
    with pytest.raises(HotplugError, match="longer than 107 bytes"):
        await asyncio.to_thread(attach_channels, conn, d.name, messaging=True,
                                channels_dir="/var/lib/nfvha/" + "d" * 100)
