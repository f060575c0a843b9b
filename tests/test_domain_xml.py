"""Reading a libvirt domain XML: channels, controller, Nova metadata; odd and
bad input gives a clear result, never a crash (compute/domain_xml.py)."""
from __future__ import annotations

import uuid as uuidlib

import pytest

from nfvha.compute import domain_xml as dx

UUID = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
HB = f"/var/lib/libvirt/qemu/cgcs.heartbeat.{UUID.lower()}.sock"
MSG = "/var/lib/libvirt/qemu/cgcs.messaging.instance-0000000a.sock"


def domain(devices: str = "", *, name: str = "instance-0000000a", uuid: str = UUID,
           metadata: str = "") -> str:
    return (f"<domain type='kvm' id='3'><name>{name}</name><uuid>{uuid}</uuid>{metadata}"
            f"<memory unit='KiB'>65536</memory><devices>{devices}</devices></domain>")


def unix(port: str, path: str, mode: str = "bind", alias: str | None = None) -> str:
    a = f"<alias name='{alias}'/>" if alias else ""
    return (f"<channel type='unix'><source mode='{mode}' path='{path}'/>"
            f"<target type='virtio' name='{port}' state='connected'/>{a}"
            f"<address type='virtio-serial' controller='0' bus='0' port='1'/></channel>")


CONTROLLER = ("<controller type='virtio-serial' index='0'><alias name='virtio-serial0'/>"
              "</controller>")

# as Nova's libvirt driver writes it (nova/virt/libvirt/config.py)
NOVA_METADATA = """
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="27.1.0"/>
      <nova:name>web-1</nova:name>
      <nova:creationTime>2024-05-01 10:00:00</nova:creationTime>
      <nova:flavor name="m1.small">
        <nova:memory>2048</nova:memory><nova:disk>20</nova:disk><nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral><nova:vcpus>1</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="0c3d9a4a2e4b4d0b9d0e7f3f1b2c3d4e">alice</nova:user>
        <nova:project uuid="9f1e2d3c4b5a69788796a5b4c3d2e1f0">tenant-a</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="5a2b1c3d-0000-4000-8000-000000000001"/>
    </nova:instance>
  </metadata>"""


def test_starlingx_layout_two_ports_with_aliases_and_controller() -> None:
    info = dx.parse_domain(domain(CONTROLLER + unix("cgcs.heartbeat", HB, alias="channel0")
                                  + unix("cgcs.messaging", MSG, alias="channel1")))
    assert info.name == "instance-0000000a" == info.instance_name
    assert info.uuid == UUID.lower()
    assert info.virtio_serial
    assert info.layout == "split"
    assert info.channel("heartbeat") == dx.Channel("cgcs.heartbeat", "heartbeat", HB, "channel0")
    assert info.channel("messaging") == dx.Channel("cgcs.messaging", "messaging", MSG, "channel1")
    assert info.problems == ()
    assert info.nova is None


def test_single_port_layout_is_the_heartbeat_port_alone() -> None:
    info = dx.parse_domain(domain(CONTROLLER + unix("cgcs.heartbeat", HB)))
    assert info.layout == "heartbeat"
    assert [c.kind for c in info.channels] == ["heartbeat"]
    assert info.channel("messaging") is None
    assert info.channels[0].alias is None  # an inactive definition has no aliases


@pytest.mark.parametrize("xml", [
    domain(),
    "<domain><name>x</name><uuid>" + UUID + "</uuid></domain>",  # no <devices>
    domain("<controller type='usb' index='0'/>"),
])
def test_no_channels_no_controller(xml: str) -> None:
    info = dx.parse_domain(xml)
    assert info.channels == () and info.layout == "none" and not info.virtio_serial
    assert info.problems == ()


def test_other_ports_and_targets_are_ignored_silently() -> None:
    info = dx.parse_domain(domain(
        CONTROLLER
        + unix("org.qemu.guest_agent.0", "/run/qga.sock")
        + "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>"
        + "<channel type='pty'><target type='guestfwd' address='10.0.2.1' port='4600'/>"
          "</channel>"
        + "<channel type='unix'><source mode='bind' path='/x.sock'/><target type='virtio'/>"
          "</channel>"
        + unix("cgcs.heartbeat", HB)))
    assert [c.port for c in info.channels] == ["cgcs.heartbeat"]
    assert info.problems == ()
    assert "org.qemu.guest_agent.0" in info.ports and "com.redhat.spice.0" in info.ports


@pytest.mark.parametrize("channel, problem", [
    ("<channel type='pty'><target type='virtio' name='cgcs.heartbeat'/></channel>",
     "not a UNIX socket"),
    ("<channel type='unix'><target type='virtio' name='cgcs.heartbeat'/></channel>",
     "no socket path"),
    ("<channel type='unix'><source mode='bind'/><target type='virtio' name='cgcs.heartbeat'/>"
     "</channel>", "no socket path"),
    (unix("cgcs.heartbeat", HB, mode="connect"), "rather than listening"),
    (unix("cgcs.heartbeat", "relative/hb.sock"), "relative socket path"),
    (unix("cgcs.heartbeat", "/" + "d" * 120 + "/hb.sock"), "longer than 107 bytes"),
])
def test_unusable_channel_is_left_out_with_a_problem(channel: str, problem: str) -> None:
    info = dx.parse_domain(domain(CONTROLLER + channel + unix("cgcs.messaging", MSG)))
    assert [c.kind for c in info.channels] == ["messaging"]
    assert len(info.problems) == 1 and problem in info.problems[0]
    assert "cgcs.heartbeat" in info.problems[0]
    assert "cgcs.heartbeat" in info.ports  # present, though unusable: hot-plug must not add one


def test_a_source_without_mode_is_bind() -> None:
    xml = domain(f"<channel type='unix'><source path='{HB}'/>"
                 f"<target type='virtio' name='cgcs.heartbeat'/></channel>")
    assert dx.parse_domain(xml).channel("heartbeat").path == HB


def test_second_channel_on_a_port_is_ignored() -> None:
    info = dx.parse_domain(domain(unix("cgcs.heartbeat", HB) + unix("cgcs.heartbeat", "/b.sock")))
    assert [c.path for c in info.channels] == [HB]
    assert "second channel on port cgcs.heartbeat" in info.problems[0]


def test_nova_metadata() -> None:
    info = dx.parse_domain(domain(unix("cgcs.heartbeat", HB), metadata=NOVA_METADATA))
    assert info.nova == dx.NovaMeta(display_name="web-1", flavor="m1.small",
                                    project_id="9f1e2d3c4b5a69788796a5b4c3d2e1f0",
                                    project_name="tenant-a",
                                    user_id="0c3d9a4a2e4b4d0b9d0e7f3f1b2c3d4e", user_name="alice")


def test_partial_or_foreign_metadata() -> None:
    partial = ('<metadata><nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">'
               '<nova:flavor/><nova:owner><nova:project>p</nova:project></nova:owner>'
               '</nova:instance></metadata>')
    nova = dx.parse_domain(domain(metadata=partial)).nova
    assert nova == dx.NovaMeta(project_name="p")
    other = '<metadata><app:x xmlns:app="http://example.com/app"/></metadata>'
    assert dx.parse_domain(domain(metadata=other)).nova is None
    # the nova prefix on another namespace is not Nova's
    fake = '<metadata><nova:instance xmlns:nova="http://example.com/nova"/></metadata>'
    assert dx.parse_domain(domain(metadata=fake)).nova is None


@pytest.mark.parametrize("xml, reason", [
    ("", "does not parse"),
    ("not xml at all", "does not parse"),
    ("<domain><name>x</name>", "does not parse"),
    ("<network><name>default</name></network>", "root element <network>"),
    ("<domain><uuid>" + UUID + "</uuid></domain>", "without a <name>"),
    ("<domain><name> </name><uuid>" + UUID + "</uuid></domain>", "without a <name>"),
    ("<domain><name>x</name></domain>", "bad or missing <uuid>"),
    ("<domain><name>x</name><uuid>not-a-uuid</uuid></domain>", "bad or missing <uuid>"),
    ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
     "<domain><name>&b;</name></domain>", "DOCTYPE/ENTITY"),
    (b"<domain><name>\xff</name></domain>", "not UTF-8"),
    ("<domain>" + "<x/>" * (dx.MAX_XML // 4) + "</domain>", "too large"),
    (None, "must be text"),
])
def test_bad_xml_raises_a_clear_error(xml, reason: str) -> None:
    with pytest.raises(dx.DomainXMLError, match=reason.replace("<", ".").replace(">", ".")):
        dx.parse_domain(xml)


def test_bytes_input_and_upper_case_uuid() -> None:
    info = dx.parse_domain(domain(unix("cgcs.heartbeat", HB)).encode())
    assert info.uuid == str(uuidlib.UUID(UUID))


def test_socket_names() -> None:
    assert dx.socket_name("cgcs.heartbeat", "instance-1", UUID) == \
        f"cgcs.heartbeat.{UUID.lower()}.sock"
    assert dx.socket_name("cgcs.messaging", "instance-1", UUID) == "cgcs.messaging.instance-1.sock"
    for bad in ("a/b", ".", ".."):
        with pytest.raises(dx.DomainXMLError):
            dx.socket_name("cgcs.messaging", bad, UUID)
    with pytest.raises(dx.DomainXMLError):
        dx.socket_name("org.qemu.guest_agent.0", "x", UUID)


def test_channel_xml_parses_back_and_quotes() -> None:
    path = "/var/lib/it's \"odd\" & <here>.sock"
    info = dx.parse_domain(domain(dx.channel_xml("cgcs.heartbeat", path)))
    assert info.channel("heartbeat") == dx.Channel("cgcs.heartbeat", "heartbeat", path)
    with pytest.raises(dx.DomainXMLError, match="absolute"):
        dx.channel_xml("cgcs.heartbeat", "x.sock")
    with pytest.raises(dx.DomainXMLError, match="longer"):
        dx.channel_xml("cgcs.heartbeat", "/" + "x" * 200)


def test_channel_devices_for_detach() -> None:
    xml = domain(CONTROLLER + unix("cgcs.heartbeat", HB, alias="channel0")
                 + "<channel type='pty'><target type='virtio' name='cgcs.messaging'/></channel>"
                 + unix("org.qemu.guest_agent.0", "/run/qga.sock"))
    found = dx.channel_devices(xml, ("cgcs.heartbeat", "cgcs.messaging"))
    assert [(p, path) for p, _, path in found] == [("cgcs.heartbeat", HB), ("cgcs.messaging", None)]
    # each device XML is one <channel> element, parsing back to the same channel
    dev = found[0][1]
    assert dev.startswith("<channel") and dev.endswith("</channel>")
    assert dx.parse_domain(domain(dev)).channel("heartbeat").alias == "channel0"
    with pytest.raises(dx.DomainXMLError):
        dx.channel_devices("<oops", ("cgcs.heartbeat",))


def test_minimal_domain_round_trip() -> None:
    nova = dx.NovaMeta(display_name="web <1>", flavor="m1.tiny", project_id="p1",
                       project_name="tenant", user_id="u1", user_name="bob")
    xml = dx.minimal_domain("nfvha-t1", UUID, channels={"cgcs.heartbeat": HB,
                                                        "cgcs.messaging": MSG},
                            kernel="/k", initrd="/i", cmdline="console=ttyS0 a<b",
                            console_log="/tmp/c.log", nova=nova)
    info = dx.parse_domain(xml)
    assert (info.name, info.uuid, info.virtio_serial, info.layout) == \
        ("nfvha-t1", UUID.lower(), True, "split")
    assert info.nova == nova
    bare = dx.parse_domain(dx.minimal_domain("nfvha-t2", UUID, virtio_serial=False))
    assert not bare.virtio_serial and bare.channels == () and bare.nova is None
    with pytest.raises(dx.DomainXMLError):
        dx.minimal_domain("bad name/", UUID)
    with pytest.raises(ValueError):
        dx.minimal_domain("ok", "not-a-uuid")
