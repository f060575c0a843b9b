"""Real guests under libvirt for `nfvha demo --qemu`, the recovery tests and
the recovery benchmark.

Each guest is a persistent TCG domain booting the project's guest image
(demo/guest_image.py: a Debian kernel, a busybox initramfs with Python and
nfvha-guest) with

- the heartbeat channel ``cgcs.heartbeat`` on a UNIX socket named as
  StarlingX names it (``cgcs.heartbeat.<uuid>.sock``), read by the compute
  agent's libvirt source from the domain's XML like any other domain's;
- the control port ``nfvha.test.control``, through which the demo steers the
  guest from inside (hang the agent, turn unhealthy, panic the kernel, shut
  down, reboot, read the boot id);
- a pvpanic device, so a kernel panic is libvirt's CRASHED event (the
  domain is then destroyed: ``on_crash`` destroy);
- on request, qemu-ga's channel (libvirt's own ``org.qemu.guest_agent.0``,
  or a port of another name whose socket a client of ours opens) and an
  i6300esb watchdog (needs an image built with watchdog_kernel()).

Persistent (defined, then started), so a destroyed or crashed domain can
be started again by a recovery action. The guest's settings ride on its
kernel command line, so one image serves every domain.
"""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from nfvha.compute import domain_xml
from nfvha.demo import guest_image

CHANNELS_ROOT = Path("/var/lib/nfvha/demo-channels")
# qemu-ga on a port libvirt does not know as its agent's: the socket is free
# for a client of ours (libvirt's agent API takes whole seconds as timeout).
DIRECT_QGA_PORT = "nfvha.bench.qga"


class GuestError(RuntimeError):
    """The guest did not do what it was asked (the message ends with its console)."""


@dataclass
class LibvirtGuest:
    name: str
    uuid: str
    hb_path: str
    control_path: str
    console_log: Path
    fleet: GuestFleet
    qga_path: str | None = None  # qemu-ga's socket when qga="direct"

    def domain(self) -> Any:
        return self.fleet.conn().lookupByUUIDString(self.uuid)

    def running(self) -> bool:
        import libvirt

        return self.domain().state()[0] == libvirt.VIR_DOMAIN_RUNNING

    def qemu_pid(self) -> int:
        return int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text().strip())

    def console(self, tail: int = 3000) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    async def start(self) -> None:
        await asyncio.to_thread(lambda: self.domain().create())

    async def control(self, command: str, timeout: float = 60.0) -> str:
        """One command on the control port; its ``ok ...`` answer without ``ok``.
        A fresh connection each time: a reset or restart of the domain may
        have replaced the socket. Commands sent while the guest boots wait in
        QEMU until /init reads them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.control_path)
                break
            except OSError:  # the domain is (re)starting: its socket comes back
                if asyncio.get_running_loop().time() > deadline:
                    raise GuestError(f"{self.name}: no control socket\n{self.console()}") from None
                await asyncio.sleep(0.2)
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            while True:
                left = deadline - asyncio.get_running_loop().time()
                line = await asyncio.wait_for(reader.readline(), max(left, 0.01))
                if not line:
                    raise GuestError(f"{self.name}: control closed during {command!r}\n"
                                     f"{self.console()}")
                text = line.decode(errors="replace").strip()
                if text.startswith("ok " + command.split()[0]):
                    return text[3 + len(command.split()[0]):].strip()
                if text.startswith("err "):
                    raise GuestError(f"{self.name}: {command!r}: {text}")
                # an answer to an earlier command the guest answered late
        except asyncio.TimeoutError:
            raise GuestError(f"{self.name}: no answer to {command!r} within {timeout:.0f} s\n"
                             f"{self.console()}") from None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def ask(self, command: str, timeout: float = 90.0, attempt_s: float = 15.0) -> str:
        """An idempotent command (bootid, ping, ports, state), asked again on a
        fresh connection when an answer does not come: a line sent while the
        guest reset may be lost with the reset."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                return await self.control(command, min(attempt_s, max(left, 0.1)))
            except GuestError:
                if loop.time() >= deadline:
                    raise

    async def boot_id(self, timeout: float = 90.0) -> str:
        return await self.ask("bootid", timeout)


class GuestFleet:
    """The domains one demo, test or benchmark made; `cleanup()` destroys and
    undefines them and removes their sockets."""

    def __init__(self, uri: str, image: guest_image.GuestImage, *,
                 channels_dir: Path | None = None, memory_mib: int = 192,
                 prefix: str = "nfvha") -> None:
        self.uri = uri
        self.image = image
        self.memory_mib = memory_mib
        self.prefix = prefix
        if channels_dir is None:
            # AF_UNIX paths are short (107 bytes) and QEMU (libvirt-qemu)
            # must reach them: a short directory under /var/lib/nfvha
            CHANNELS_ROOT.mkdir(parents=True, exist_ok=True)
            channels_dir = Path(tempfile.mkdtemp(prefix="d-", dir=CHANNELS_ROOT))
            self._own_dir = True
        else:
            channels_dir.mkdir(parents=True, exist_ok=True)
            self._own_dir = False
        channels_dir.chmod(0o755)
        self.dir = channels_dir
        self.guests: list[LibvirtGuest] = []
        self._conn: Any = None

    def conn(self) -> Any:
        import libvirt

        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.open(self.uri)
        return self._conn

    async def add(self, label: str, *, interval_ms: int = 250,
                  corrective_action: str = "reboot", start: bool = True,
                  probe_period_ms: int = 50, heartbeat: bool = True,
                  nova: domain_xml.NovaMeta | None = None,
                  uuid: str | None = None, qga: str | None = None,
                  watchdog: str | None = None) -> LibvirtGuest:
        """Defines (and starts) one guest. ``heartbeat`` False: no heartbeat
        channel in its XML (for hot-plug). ``nova``: the metadata Nova's
        libvirt driver writes (flavor name, owner). ``qga``: a qemu-ga
        channel, "libvirt" (org.qemu.guest_agent.0: libvirt's agent API) or
        "direct" (a socket of its own, ``qga_path``). ``watchdog``: an
        i6300esb watchdog with this libvirt action (none, pause, reset...);
        the guest arms it with its control command ``wdog T,P``."""
        uid = uuid or str(uuidlib.uuid4())
        name = f"{self.prefix}-{label}-{uid[:8]}"
        g = LibvirtGuest(
            name, uid,
            str(self.dir / domain_xml.socket_name(domain_xml.HEARTBEAT_PORT, name, uid)),
            str(self.dir / f"control.{uid[:8]}.sock"), self.dir / f"{name}.console", self)
        channels = {guest_image.CONTROL_PORT: g.control_path}
        if heartbeat:
            channels[domain_xml.HEARTBEAT_PORT] = g.hb_path
        qga_port = None
        if qga is not None:
            if qga not in ("libvirt", "direct"):
                raise ValueError(f"qga: 'libvirt' or 'direct', not {qga!r}")
            qga_port = guest_image.QGA_PORT if qga == "libvirt" else DIRECT_QGA_PORT
            g.qga_path = str(self.dir / f"qga.{uid[:8]}.sock")
            channels[qga_port] = g.qga_path
        cmdline = guest_image.kernel_cmdline(
            interval_ms=interval_ms, corrective_action=corrective_action,
            probes=[f"file:/run/nfvha/healthy,period_ms={probe_period_ms}"],
            wait_ports=(() if not heartbeat else
                        None if qga_port is None else
                        (guest_image.CONTROL_PORT, domain_xml.HEARTBEAT_PORT, qga_port)),
            qga_port=qga_port if qga == "direct" else None)
        xml = domain_xml.minimal_domain(
            name, uid, memory_mib=self.memory_mib, kernel=str(self.image.kernel),
            initrd=str(self.image.initrd), cmdline=cmdline, channels=channels,
            console_log=str(g.console_log), panic="isa", nova=nova)
        if watchdog is not None:
            xml = xml.replace("</devices>", f"<watchdog model='i6300esb' "
                                            f"action={quoteattr(watchdog)}/></devices>", 1)
        await asyncio.to_thread(lambda: self.conn().defineXML(xml))
        self.guests.append(g)
        if start:
            await g.start()
        return g

    async def cleanup(self) -> None:
        def run() -> None:
            import libvirt

            for g in self.guests:
                try:
                    dom = self.conn().lookupByUUIDString(g.uuid)
                except libvirt.libvirtError:
                    continue
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefine()
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

        await asyncio.to_thread(run)
        self.guests.clear()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def prepare_image() -> guest_image.GuestImage:
    """The guest image, built (cached) and installed where libvirt's QEMU can
    read it. Raises SystemExit naming what is missing."""
    return guest_image.install(guest_image.build())
