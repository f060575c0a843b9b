"""Reading and writing the parts of a libvirt domain XML nfvha cares about
(pure: strings in, values out; no libvirt).

- ``parse_domain(xml)``: the domain's name and uuid, its guest channels
  (``<channel>`` with a virtio target), whether it has a virtio-serial
  controller, Nova's metadata. A channel we cannot use (not a UNIX socket,
  QEMU connecting rather than listening, no path, a second one on the same
  port) is left out with a line in ``problems``; XML that is not a domain
  raises ``DomainXMLError`` with the reason. Nothing else is raised.
- ``channel_xml(port, path)``: the ``<channel>`` to hot-plug.
- ``minimal_domain(...)``: a small TCG domain for tests, the demo and
  benchmarks.

Layouts: StarlingX gives a guest two ports, ``cgcs.heartbeat`` (socket
``cgcs.heartbeat.<uuid>.sock``) and ``cgcs.messaging``
(``cgcs.messaging.<instance-name>.sock``); OPNFV's single-port layout
multiplexes both on ``cgcs.heartbeat`` (the agent's [servergroup]
single_port says which, the XML cannot).
"""
from __future__ import annotations

import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

HEARTBEAT_PORT = "cgcs.heartbeat"
MESSAGING_PORT = "cgcs.messaging"
PORT_KINDS = {HEARTBEAT_PORT: "heartbeat", MESSAGING_PORT: "messaging"}
NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
MAX_XML = 4 * 1024 * 1024  # a domain XML is a few KiB; more is not a domain we can use


class DomainXMLError(ValueError):
    """Not a domain XML we can read; the message says why."""


@dataclass(frozen=True)
class Channel:
    port: str              # the virtio port's name (target name), e.g. cgcs.heartbeat
    kind: str              # "heartbeat" | "messaging"
    path: str              # the UNIX socket QEMU listens on
    alias: str | None = None   # libvirt's device alias in a live XML (channel0...)


@dataclass(frozen=True)
class NovaMeta:
    display_name: str | None = None
    flavor: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    user_id: str | None = None
    user_name: str | None = None


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str                                  # lower case
    channels: tuple[Channel, ...] = ()         # at most one per port, usable ones only
    virtio_serial: bool = False                # has a virtio-serial controller
    nova: NovaMeta | None = None
    problems: tuple[str, ...] = field(default=())
    ports: frozenset[str] = frozenset()        # every virtio port name, usable or not
    run_id: int | None = None                  # libvirt's id of this run (live XML only)

    def channel(self, kind: str) -> Channel | None:
        for ch in self.channels:
            if ch.kind == kind:
                return ch
        return None

    @property
    def instance_name(self) -> str:
        """Nova's instance name (instance-0000000a) is the domain's name."""
        return self.name

    @property
    def layout(self) -> str:
        """"split" (heartbeat + messaging ports), "heartbeat" (heartbeat port
        only: the StarlingX layout without messaging, or OPNFV single-port),
        "messaging" (messaging only), "none"."""
        kinds = {ch.kind for ch in self.channels}
        if kinds == {"heartbeat", "messaging"}:
            return "split"
        return next(iter(kinds)) if kinds else "none"


def parse_domain(xml: str | bytes) -> DomainInfo:
    """The domain in `xml` (a live or an inactive definition)."""
    root = _root(xml)
    name = (root.findtext("name") or "").strip()
    if not name:
        raise DomainXMLError("domain XML without a <name>")
    raw_uuid = (root.findtext("uuid") or "").strip()
    try:
        uuid = str(uuidlib.UUID(raw_uuid))
    except ValueError:
        raise DomainXMLError(f"domain {name!r}: bad or missing <uuid> {raw_uuid!r}") from None
    problems: list[str] = []
    devices = root.find("devices")
    channels: list[Channel] = []
    ports: set[str] = set()
    virtio_serial = False
    if devices is not None:
        virtio_serial = any(c.get("type") == "virtio-serial"
                            for c in devices.findall("controller"))
        seen: set[str] = set()
        for el in devices.findall("channel"):
            target = el.find("target")
            if target is not None and target.get("type") == "virtio" and target.get("name"):
                ports.add(target.get("name") or "")
            ch = _channel(el, problems)
            if ch is None:
                continue
            if ch.port in seen:
                problems.append(f"second channel on port {ch.port} ({ch.path}) ignored")
                continue
            seen.add(ch.port)
            channels.append(ch)
    return DomainInfo(name=name, uuid=uuid, channels=tuple(channels),
                      virtio_serial=virtio_serial, nova=_nova(root), problems=tuple(problems),
                      ports=frozenset(ports), run_id=_run_id(root))


def _run_id(root: ET.Element) -> int | None:
    # libvirtd numbers each start of a domain anew; the inactive XML has none
    raw = root.get("id")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def channel_devices(xml: str, ports: tuple[str, ...] | frozenset[str]) \
        -> list[tuple[str, str, str | None]]:
    """(port, device XML, socket path or None) of every <channel> on a
    virtio port in `ports`, whatever its type: what to give
    virDomainDetachDeviceFlags. Raises DomainXMLError for XML that is not
    a domain."""
    root = _root(xml)
    out = []
    devices = root.find("devices")
    for el in devices.findall("channel") if devices is not None else ():
        target = el.find("target")
        if target is None or target.get("type") != "virtio" or target.get("name") not in ports:
            continue
        source = el.find("source")
        path = source.get("path") if source is not None and el.get("type") == "unix" else None
        el.tail = None  # tostring() would carry the whitespace after the element
        out.append((target.get("name") or "", ET.tostring(el, encoding="unicode"), path))
    return out


def _root(xml: str | bytes) -> ET.Element:
    if isinstance(xml, bytes):
        try:
            xml = xml.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DomainXMLError(f"domain XML is not UTF-8: {exc}") from None
    if not isinstance(xml, str):
        raise DomainXMLError(f"domain XML must be text, not {type(xml).__name__}")
    if len(xml) > MAX_XML:
        raise DomainXMLError(f"domain XML too large ({len(xml)} characters)")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        # libvirt never writes them; entity expansion is a way to blow memory up
        raise DomainXMLError("domain XML with a DOCTYPE/ENTITY declaration refused")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainXMLError(f"domain XML does not parse: {exc}") from None
    if root.tag != "domain":
        raise DomainXMLError(f"not a domain XML: root element <{root.tag}>")
    return root


def _channel(el: ET.Element, problems: list[str]) -> Channel | None:
    target = el.find("target")
    if target is None or target.get("type") != "virtio":
        return None  # guestfwd, xen...: not a virtio-serial port
    port = target.get("name") or ""
    kind = PORT_KINDS.get(port)
    if kind is None:
        return None  # the guest agent's org.qemu.guest_agent.0 and the like
    ctype = el.get("type")
    if ctype != "unix":
        problems.append(f"channel {port} is of type {ctype!r}, not a UNIX socket: not used")
        return None
    source = el.find("source")
    path = source.get("path") if source is not None else None
    mode = (source.get("mode") if source is not None else None) or "bind"
    if not path:
        problems.append(f"channel {port} has no socket path: not used")
        return None
    if mode != "bind":
        problems.append(f"channel {port}: QEMU connects to {path} (mode {mode!r}) rather than "
                        f"listening: not used")
        return None
    if not path.startswith("/"):
        problems.append(f"channel {port}: relative socket path {path!r}: not used")
        return None
    if len(path.encode()) > UNIX_PATH_MAX:
        problems.append(f"channel {port}: socket path longer than {UNIX_PATH_MAX} bytes: "
                        f"not used")
        return None
    alias_el = el.find("alias")
    alias = alias_el.get("name") if alias_el is not None else None
    return Channel(port=port, kind=kind, path=path, alias=alias)


def _nova(root: ET.Element) -> NovaMeta | None:
    inst = root.find(f"metadata/{{{NOVA_NS}}}instance")
    if inst is None:
        return None

    def text(path: str) -> str | None:
        v = inst.findtext(path.replace("nova:", f"{{{NOVA_NS}}}"))
        return (v.strip() or None) if v is not None else None

    def attr(path: str, name: str) -> str | None:
        el = inst.find(path.replace("nova:", f"{{{NOVA_NS}}}"))
        return (el.get(name) or None) if el is not None else None

    return NovaMeta(display_name=text("nova:name"), flavor=attr("nova:flavor", "name"),
                    project_id=attr("nova:owner/nova:project", "uuid"),
                    project_name=text("nova:owner/nova:project"),
                    user_id=attr("nova:owner/nova:user", "uuid"),
                    user_name=text("nova:owner/nova:user"))


# ---------------------------------------------------------------------- building
def socket_name(port: str, domain_name: str, domain_uuid: str) -> str:
    """The StarlingX socket file name of `port`: heartbeat by uuid,
    messaging by instance (domain) name."""
    if port == HEARTBEAT_PORT:
        return f"{port}.{domain_uuid.lower()}.sock"
    if port == MESSAGING_PORT:
        if "/" in domain_name or domain_name in (".", ".."):
            raise DomainXMLError(f"domain name {domain_name!r} cannot name a socket file")
        return f"{port}.{domain_name}.sock"
    raise DomainXMLError(f"not an nfvha port: {port!r}")


def channel_xml(port: str, path: str) -> str:
    """The <channel> device of a virtio-serial port on a UNIX socket QEMU listens on."""
    if not path.startswith("/"):
        raise DomainXMLError(f"socket path must be absolute: {path!r}")
    if len(path.encode()) > UNIX_PATH_MAX:
        raise DomainXMLError(f"socket path longer than {UNIX_PATH_MAX} bytes: {path!r}")
    return (f"<channel type='unix'><source mode='bind' path={quoteattr(path)}/>"
            f"<target type='virtio' name={quoteattr(port)}/></channel>")


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def minimal_domain(name: str, uuid: str, *, memory_mib: int = 64,
                   channels: dict[str, str] | None = None, virtio_serial: bool = True,
                   kernel: str | None = None, initrd: str | None = None,
                   cmdline: str | None = None, console_log: str | None = None,
                   nova: NovaMeta | None = None, panic: str | None = None,
                   emulator: str = "/usr/bin/qemu-system-x86_64") -> str:
    """A small TCG domain (type 'qemu'): with `kernel` it boots it directly,
    without it sits in the firmware (enough for channels, lifecycle events,
    reset and hot-plug). `channels`: port -> socket path. `console_log`: the
    serial console goes to that file. `panic`: a panic device model ('isa':
    pvpanic, the guest's panic becomes a CRASHED event; the domain is then
    destroyed). No graphics (libvirt rejects type='none'; none given means
    none)."""
    if not _NAME_OK.match(name):
        raise DomainXMLError(f"unsuitable domain name {name!r}")
    uuid = str(uuidlib.UUID(uuid))
    os_parts = ["<type arch='x86_64' machine='pc'>hvm</type>"]
    if kernel:
        os_parts.append(f"<kernel>{_text(kernel)}</kernel>")
        if initrd:
            os_parts.append(f"<initrd>{_text(initrd)}</initrd>")
        if cmdline:
            os_parts.append(f"<cmdline>{_text(cmdline)}</cmdline>")
    devices = [f"<emulator>{_text(emulator)}</emulator>"]
    if virtio_serial:
        devices.append("<controller type='virtio-serial' index='0'/>")
    for port, path in (channels or {}).items():
        devices.append(channel_xml(port, path))
    if console_log:
        devices.append(f"<serial type='file'><source path={quoteattr(console_log)}/>"
                       f"<target port='0'/></serial><console type='file'>"
                       f"<source path={quoteattr(console_log)}/><target type='serial'/>"
                       f"</console>")
    if panic:
        devices.append(f"<panic model={quoteattr(panic)}/>")
    devices.append("<memballoon model='none'/>")
    meta = ""
    if nova is not None:
        parts = []
        if nova.display_name:
            parts.append(f"<nova:name>{_text(nova.display_name)}</nova:name>")
        if nova.flavor:
            parts.append(f"<nova:flavor name={quoteattr(nova.flavor)}/>")
        owner = []
        if nova.user_name or nova.user_id:
            owner.append(f"<nova:user uuid={quoteattr(nova.user_id or '')}>"
                         f"{_text(nova.user_name or '')}</nova:user>")
        if nova.project_name or nova.project_id:
            owner.append(f"<nova:project uuid={quoteattr(nova.project_id or '')}>"
                         f"{_text(nova.project_name or '')}</nova:project>")
        if owner:
            parts.append("<nova:owner>" + "".join(owner) + "</nova:owner>")
        meta = (f"<metadata><nova:instance xmlns:nova=\"{NOVA_NS}\">" + "".join(parts)
                + "</nova:instance></metadata>")
    return (f"<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid>{meta}"
            f"<memory unit='MiB'>{int(memory_mib)}</memory><vcpu>1</vcpu>"
            f"<os>{''.join(os_parts)}</os><features><acpi/></features>"
            f"<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
            f"<on_crash>destroy</on_crash>"
            f"<devices>{''.join(devices)}</devices></domain>")


def _text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
