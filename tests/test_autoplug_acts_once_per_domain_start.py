"""Autoplug plugs a Nova domain's channels once per start of the domain: a
channel taken away on purpose while it runs stays away until it starts
again (libvirt gives every start a new domain id)."""
from __future__ import annotations

import asyncio

from nfvha.compute import hotplug
from nfvha.compute.autoplug import Autoplug
from nfvha.compute.domain_xml import HEARTBEAT_PORT, parse_domain
from nfvha.compute.flavor import Wanted
from tests.conftest import until

UUID = "6b7947d4-d350-45d0-8cd6-3b1b008464da"


def _domain(run_id: int | None, ports: tuple[str, ...] = ()) -> str:
    ident = f" id='{run_id}'" if run_id is not None else ""
    channels = "".join(
        f"<channel type='unix'><source mode='bind' path='/run/x/{p}.sock'/>"
        f"<target type='virtio' name='{p}'/></channel>" for p in ports)
    return (f"<domain type='qemu'{ident}><name>instance-0000000a</name><uuid>{UUID}</uuid>"
            "<metadata><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>"
            "<nova:flavor name='nfvha.hb'/></nova:instance></metadata>"
            "<devices><controller type='virtio-serial' index='0'/>"
            f"{channels}</devices></domain>")


class _Requests:
    def __init__(self) -> None:
        self.asked = 0

    async def lookup_retrying(self, uuid: str, image_id: str | None = None,
                              still_wanted=lambda: True) -> Wanted:
        self.asked += 1
        return Wanted(heartbeat=True)


async def test_a_detached_channel_stays_detached_until_the_domain_starts_again(
        monkeypatch) -> None:
    attached: list[str] = []

    def attach(conn, uuid, *, messaging, channels_dir):
        attached.append(uuid)
        return hotplug.HotplugResult("instance-0000000a", uuid, changed=["attached"])

    monkeypatch.setattr(hotplug, "attach_channels", attach)
    requests = _Requests()
    plug = Autoplug(requests, "qemu:///nowhere", "/run/x", open_conn=lambda uri: _Conn())
    plug.start()
    try:
        plug.on_domain(parse_domain(_domain(7)))  # started without the port
        await until(lambda: plug.counters["attached"] == 1)
        plug.on_domain(parse_domain(_domain(7, (HEARTBEAT_PORT,))))  # DEVICE_ADDED read
        plug.on_domain(parse_domain(_domain(7)))  # detached by the operator: read again
        await asyncio.sleep(0.05)
        assert attached == [UUID] and requests.asked == 1

        plug.on_domain(parse_domain(_domain(8)))  # the next start: plugged again
        await until(lambda: plug.counters["attached"] == 2)
        assert attached == [UUID, UUID]
    finally:
        await plug.stop()


async def test_a_failed_plug_is_tried_again_at_the_next_read(monkeypatch) -> None:
    calls: list[str] = []

    def attach(conn, uuid, *, messaging, channels_dir):
        calls.append(uuid)
        if len(calls) == 1:
            raise hotplug.HotplugError("libvirtd busy")
        return hotplug.HotplugResult("instance-0000000a", uuid, changed=["attached"])

    monkeypatch.setattr(hotplug, "attach_channels", attach)
    plug = Autoplug(_Requests(), "qemu:///nowhere", "/run/x", open_conn=lambda uri: _Conn())
    plug.start()
    try:
        plug.on_domain(parse_domain(_domain(7)))
        await until(lambda: plug.counters["refused"] == 1 and not plug._busy)
        plug.on_domain(parse_domain(_domain(7)))  # same run, but nothing was plugged yet
        await until(lambda: plug.counters["attached"] == 1)
        assert len(calls) == 2
    finally:
        await plug.stop()


class _Conn:
    def isAlive(self) -> int:
        return 1

    def close(self) -> None:
        pass
