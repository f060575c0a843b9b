"""Small TCG domains under libvirt for system tests (with the `libvirtd`
fixture of conftest.py).

    domains = Domains(libvirtd.uri)
    a = await domains.start("a", messaging=True)    # runs, sits in the firmware
    a.hb_path, a.qemu_pid()
    domains.cleanup()                               # destroys (and undefines) them

No kernel: the domain sits in SeaBIOS (no bootable device), which is all
channels, lifecycle events, reset and hot-plug need, and costs ~1 s and a
halted vCPU. The sockets live in a directory under /var/lib/nfvha (libvirt
creates them as root and hands them to QEMU, which runs as libvirt-qemu).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from nfvha.compute import domain_xml

CHANNELS_ROOT = Path("/var/lib/nfvha/test-channels")


@dataclass
class Dom:
    name: str
    uuid: str
    hb_path: str
    msg_path: str
    persistent: bool
    owner: Domains

    @property
    def dom(self) -> Any:
        return self.owner.conn().lookupByUUIDString(self.uuid)

    def qemu_pid(self) -> int:
        return int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text().strip())

    def state(self) -> int:
        return self.dom.state()[0]

    def settled(self) -> None:
        """Returns once libvirtd holds no job on the domain: a restarted libvirtd
        answers before it has reconnected to its QEMUs, and a destroy that
        races that reconnection fails. A change that needs a job waits."""
        self.dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, "nfvha test", None, None,
                             libvirt.VIR_DOMAIN_AFFECT_LIVE)


class Domains:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None
        CHANNELS_ROOT.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="t-", dir=CHANNELS_ROOT))
        self.dir.chmod(0o755)
        self.made: list[Dom] = []

    def conn(self) -> Any:
        """A connection of the test's own (reopened after a libvirtd restart)."""
        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.open(self.uri)
        return self._conn

    def new(self, label: str, *, messaging: bool = False, heartbeat: bool = True,
            persistent: bool = False) -> Dom:
        uuid = str(uuidlib.uuid4())
        name = f"nfvha-{label}-{uuid[:8]}"
        d = Dom(name, uuid, str(self.dir / domain_xml.socket_name("cgcs.heartbeat", name, uuid)),
                str(self.dir / domain_xml.socket_name("cgcs.messaging", name, uuid)),
                persistent, self)
        self.made.append(d)
        return d

    async def start(self, label: str, *, messaging: bool = False, heartbeat: bool = True,
                    virtio_serial: bool = True, persistent: bool = False) -> Dom:
        d = self.new(label, messaging=messaging, heartbeat=heartbeat, persistent=persistent)
        channels = {}
        if heartbeat:
            channels["cgcs.heartbeat"] = d.hb_path
        if messaging:
            channels["cgcs.messaging"] = d.msg_path
        xml = domain_xml.minimal_domain(d.name, d.uuid, channels=channels,
                                        virtio_serial=virtio_serial)

        def create() -> None:
            if persistent:
                self.conn().defineXML(xml).create()
            else:
                self.conn().createXML(xml, 0)

        await asyncio.to_thread(create)
        return d

    def cleanup(self) -> None:
        for d in self.made:
            try:
                dom = self.conn().lookupByUUIDString(d.uuid)
            except libvirt.libvirtError:
                continue
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError:
                pass
        for d in self.made:  # virtlogd's log of each domain (one file per name)
            Path(f"/var/log/libvirt/qemu/{d.name}.log").unlink(missing_ok=True)
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def is_socket(path: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


async def eof(path: str, timeout: float = 15.0):
    """Connects to QEMU's chardev socket as the compute agent would; returns
    an awaitable that ends when QEMU closes it."""
    reader, writer = await asyncio.open_unix_connection(path)

    async def closed() -> None:
        try:
            while await asyncio.wait_for(reader.read(4096), timeout):
                pass
        except ConnectionResetError:  # a killed QEMU may reset rather than close
            pass
        finally:
            writer.close()

    return asyncio.ensure_future(closed())
