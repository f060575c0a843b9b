"""Channels from the flavor, on a real libvirtd with real guests: a running
Nova domain without nfvha's channel gets it hot-plugged because its flavor
asks (Nova stand-in following Nova's api-ref, extra specs looked up through
openstacksdk), and the guest agent inside registers without a restart; a
domain whose flavor does not ask gets nothing; `nfvha detach` removes the
channel and that is no fault. A Nova that cannot answer at first is asked
again."""
from __future__ import annotations

import asyncio
import uuid as uuidlib
from pathlib import Path

import pytest
from conftest import RecordingSink, until

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.autoplug import Autoplug, AutoplugSource
from nfvha.compute.domain_xml import HEARTBEAT_PORT, NovaMeta, parse_domain
from nfvha.compute.flavor import ChannelRequests
from nfvha.compute.hotplug import detach_channels
from nfvha.compute.sources.libvirt import LibvirtSource
from nfvha.controller.reporters._openstack import connect
from nfvha.controller.service import Controller
from nfvha.standins.nova import Flavor, NovaStandin

pytestmark = [pytest.mark.system, pytest.mark.slow]


async def test_a_running_vm_gets_the_channel_its_flavor_asks_for_and_detach_is_no_fault(
        libvirtd, guest_image, tmp_path: Path) -> None:
    from nfvha.demo.libvirt_guests import GuestFleet

    fleet = GuestFleet(libvirtd.uri, guest_image)
    asks, plain = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    nova = NovaStandin(flavors={asks: Flavor("7", "nfvha.hb", {"hw:nfvha_heartbeat": "true"}),
                                plain: Flavor("8", "m1.small")})
    await nova.start()
    nova.fail_next(2, 503)  # Nova busy at first: asked again
    bus = make_bus("inproc://")
    await bus.start()
    rec = RecordingSink()
    ctl = Controller(db_url=f"sqlite:///{tmp_path / 'c.sqlite'}", reporters=[rec], bus=bus,
                     agent_down_after_s=0)
    await ctl.start()
    await bus.serve_controller(ctl)
    requests = ChannelRequests(
        lambda: connect(auth_type="none", auth={"endpoint": nova.url},
                        compute_endpoint_override=nova.url + "/v2.1"), retry_base_s=0.1)
    autoplug = Autoplug(requests, libvirtd.uri, fleet.dir)
    source = AutoplugSource(LibvirtSource(libvirtd.uri, loss_wait_s=5.0), autoplug)
    agent = ComputeAgent("cmp-flavor", tmp_path, bus, source=source, sync_interval_s=0,
                         report_interval_s=0)
    await agent.start()
    try:
        # booted without the heartbeat channel (the control port gives it a
        # virtio-serial controller, as Nova's qemu-guest-agent channel does)
        g = await fleet.add("fl", heartbeat=False, nova=NovaMeta(flavor="nfvha.hb"),
                            uuid=asks)
        other = await fleet.add("pl", heartbeat=False, nova=NovaMeta(flavor="m1.small"),
                                uuid=plain)
        await g.control("ping", 180)  # booted, its agent waiting for a port
        await until(lambda: asks in agent.sessions, 60)
        await until(lambda: agent.sessions[asks].state.phase == "enabled", 60)
        assert await g.control("ports") and (await g.boot_id())  # same boot: no restart
        assert requests.counters["failures"] == 2  # Nova's 503s were asked again
        info = parse_domain(await asyncio.to_thread(lambda: g.domain().XMLDesc(0)))
        assert HEARTBEAT_PORT in info.ports
        inactive = parse_domain(await asyncio.to_thread(lambda: g.domain().XMLDesc(2)))
        assert HEARTBEAT_PORT in inactive.ports  # and in its definition: a reboot keeps it
        # the other flavor asks nothing: nothing plugged
        await until(lambda: autoplug.counters["not_asked"] >= 1, 60)
        info = parse_domain(await asyncio.to_thread(lambda: other.domain().XMLDesc(0)))
        assert HEARTBEAT_PORT not in info.ports and plain not in agent.sessions

        # nfvha detach: the channel goes, and that is no fault
        result = await asyncio.to_thread(detach_channels, fleet.conn(), g.name)
        assert result.changed
        await until(lambda: asks not in agent.sessions, 60)
        # and it stays detached: the flavor still asks, but this run was handled
        # (before, the next read of the domain plugged it in again at once)
        await asyncio.sleep(1.0)
        assert asks not in agent.sessions and autoplug.counters["attached"] == 1
        info = parse_domain(await asyncio.to_thread(lambda: g.domain().XMLDesc(0)))
        assert HEARTBEAT_PORT not in info.ports
        assert agent.counters["faults"] == 0 and rec.events == []
    finally:
        await agent.stop()
        await ctl.stop()
        await bus.stop()
        await nova.stop()
        await fleet.cleanup()
