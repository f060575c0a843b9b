"""Hot-plugging nfvha's guest channels into a libvirt domain, and out again.

    attach_channels(conn, "instance-0000000a", messaging=True)
    detach_channels(conn, "instance-0000000a")

``attach_channels`` gives the domain a ``cgcs.heartbeat`` virtio-serial port
(and with ``messaging`` a ``cgcs.messaging`` one) on a UNIX socket in
``channels_dir`` named as StarlingX names them
(``cgcs.heartbeat.<uuid>.sock``, ``cgcs.messaging.<name>.sock``), in the
running domain (live) and in its persistent definition (config), wherever
it is missing: a second call changes nothing. libvirt creates the socket
and hands it to QEMU (owned by QEMU's user); the compute agent (root)
connects to it. A running domain without a virtio-serial controller is
refused: QEMU cannot hot-plug the controller itself, it has to be in the
definition when the domain starts.

``detach_channels`` removes the ports (live and config) and the socket
file QEMU leaves behind.

The calls block (libvirt-python); run them in a thread from asyncio.
"""
from __future__ import annotations

import logging
import os
import stat
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from nfvha.compute import domain_xml
from nfvha.compute.domain_xml import HEARTBEAT_PORT, MESSAGING_PORT

LOG = logging.getLogger(__name__)

DEFAULT_CHANNELS_DIR = "/var/lib/libvirt/qemu"  # = [compute] channels_dir's default
NFVHA_PORTS = (HEARTBEAT_PORT, MESSAGING_PORT)


class HotplugError(RuntimeError):
    """The change was refused; the message says why and what to do."""


@dataclass
class HotplugResult:
    domain: str
    uuid: str
    changed: list[str] = field(default_factory=list)    # what was done, one line each
    unchanged: list[str] = field(default_factory=list)  # what was already so

    def __str__(self) -> str:
        lines = [f"domain {self.domain} ({self.uuid}):"]
        lines += [f"  {c}" for c in self.changed]
        lines += [f"  {c} (nothing to do)" for c in self.unchanged]
        return "\n".join(lines)


def lookup_domain(conn: Any, domain: str) -> Any:
    """The domain named `domain`, or whose uuid it is."""
    try:
        uuidlib.UUID(domain)
        is_uuid = True
    except ValueError:
        is_uuid = False
    try:
        return conn.lookupByUUIDString(domain) if is_uuid else conn.lookupByName(domain)
    except libvirt.libvirtError as exc:
        raise HotplugError(f"no domain {domain!r}: {exc.get_error_message()}") from None


def attach_channels(conn: Any, domain: str, *, messaging: bool = False,
                    channels_dir: str | Path = DEFAULT_CHANNELS_DIR) -> HotplugResult:
    """Attaches the heartbeat channel (and with `messaging` the messaging
    one) where it is missing: live if the domain runs, config if it is
    persistent."""
    dom = lookup_domain(conn, domain)
    name, uuid = dom.name(), dom.UUIDString().lower()
    result = HotplugResult(name, uuid)
    active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
    live = domain_xml.parse_domain(dom.XMLDesc(0)) if active else None
    config = (domain_xml.parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
              if persistent else None)
    ports = [HEARTBEAT_PORT] + ([MESSAGING_PORT] if messaging else [])
    if live is not None and not live.virtio_serial \
            and any(p not in live.ports for p in ports):
        raise HotplugError(
            f"domain {name} has no virtio-serial controller, and QEMU cannot hot-plug one: "
            f"add <controller type='virtio-serial' index='0'/> to its definition (virsh edit "
            f"{name}) and start it again, or attach while it is shut off")
    directory = Path(channels_dir)
    for port in ports:
        try:
            path = str(directory / domain_xml.socket_name(port, name, uuid))
            dev = domain_xml.channel_xml(port, path)  # refuses a path too long for a socket
        except domain_xml.DomainXMLError as exc:
            raise HotplugError(f"domain {name}: {exc}") from None
        flags = 0
        where = []
        for info, flag, label in ((live, libvirt.VIR_DOMAIN_AFFECT_LIVE, "live"),
                                  (config, libvirt.VIR_DOMAIN_AFFECT_CONFIG, "config")):
            if info is None:
                continue
            if port in info.ports:
                ch = next((c for c in info.channels if c.port == port), None)
                result.unchanged.append(f"{port} {label}: "
                                        f"{ch.path if ch else 'present (not a UNIX socket)'}")
            else:
                flags |= flag
                where.append(label)
        if not flags:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        try:
            dom.attachDeviceFlags(dev, flags)
        except libvirt.libvirtError as exc:
            raise HotplugError(f"domain {name}: attaching {port} ({'+'.join(where)}) failed: "
                               f"{exc.get_error_message()}") from None
        result.changed.append(f"attached {port} at {path} ({'+'.join(where)})")
        LOG.info("domain %s: attached %s at %s (%s)", name, port, path, "+".join(where))
    return result


def detach_channels(conn: Any, domain: str, *, ports: tuple[str, ...] = NFVHA_PORTS,
                    timeout_s: float = 10.0) -> HotplugResult:
    """Detaches every channel on `ports` (live and config) and removes the
    socket files they leave behind."""
    dom = lookup_domain(conn, domain)
    name, uuid = dom.name(), dom.UUIDString().lower()
    result = HotplugResult(name, uuid)
    stale: set[str] = set()
    active = bool(dom.isActive())
    if active:
        for port, dev, path in domain_xml.channel_devices(dom.XMLDesc(0), ports):
            try:
                dom.detachDeviceFlags(dev, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError as exc:
                raise HotplugError(f"domain {name}: detaching {port} (live) failed: "
                                   f"{exc.get_error_message()}") from None
            _wait_removed(dom, port, timeout_s)
            result.changed.append(f"detached {port} (live)")
            if path:
                stale.add(path)
    if dom.isPersistent():
        for port, dev, path in domain_xml.channel_devices(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), ports):
            try:
                dom.detachDeviceFlags(dev, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            except libvirt.libvirtError as exc:
                raise HotplugError(f"domain {name}: detaching {port} (config) failed: "
                                   f"{exc.get_error_message()}") from None
            result.changed.append(f"detached {port} (config)")
            if path and not active:  # a socket left from its last run: nobody listens
                stale.add(path)
    if not result.changed:
        result.unchanged.append(f"no channel on {', '.join(ports)}")
    still_used = set()
    if dom.isActive():
        still_used = {c.path for c in domain_xml.parse_domain(dom.XMLDesc(0)).channels}
    for path in sorted(stale - still_used):
        if _remove_socket(path):
            result.changed.append(f"removed stale socket {path}")
    for line in result.changed:
        LOG.info("domain %s: %s", name, line)
    return result


def _wait_removed(dom: Any, port: str, timeout_s: float) -> None:
    # QEMU removes a virtio-serial port at once, but libvirt says so with
    # DEVICE_REMOVED: until then the live XML still lists it
    end = time.monotonic() + timeout_s
    while True:
        if not domain_xml.channel_devices(dom.XMLDesc(0), (port,)):
            return
        if time.monotonic() > end:
            raise HotplugError(f"domain {dom.name()}: {port} still present {timeout_s:g} s "
                               f"after the detach was asked")
        time.sleep(0.02)


def _remove_socket(path: str) -> bool:
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False  # not ours to remove
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
