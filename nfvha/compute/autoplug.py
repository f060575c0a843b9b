"""Channels from the flavor: a Nova domain that starts gets the channels its
flavor (or image) asks for, hot-plugged live and into its definition.

The libvirt source hands every running domain it reads to ``on_domain``.
A domain with Nova's metadata that lacks an nfvha port is looked up
(compute/flavor.py: the extra specs through openstacksdk, cached, asked
again while Nova cannot answer and the domain still runs); if its flavor
asks, ``hotplug.attach_channels`` adds the ports, and the source offers the
new channel when libvirt reports the device (DEVICE_ADDED). The guest agent
finds the port appear and registers without a restart.

Nova rebuilds the domain's XML on a hard reboot, stop/start, resize and
migration, which drops a hot-plugged channel: so this runs on every start,
not once. It runs once per start (libvirt's domain id tells the runs
apart): a channel the operator detaches (``nfvha detach``) stays detached
until the domain next starts, instead of coming back at the next read.

A domain without a virtio-serial controller cannot take a channel while
it runs (QEMU cannot hot-plug the controller); Nova adds one when an image
asks for any channel (``hw_qemu_guest_agent=yes``): the log says so, once
per domain start.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nfvha.compute import domain_xml, hotplug
from nfvha.compute.domain_xml import HEARTBEAT_PORT, MESSAGING_PORT
from nfvha.compute.flavor import ChannelRequests

LOG = logging.getLogger(__name__)

_HANDLED_MAX = 4096


class Autoplug:
    def __init__(self, requests: ChannelRequests, uri: str, channels_dir: str | Path, *,
                 open_conn: Callable[[str], Any] | None = None) -> None:
        self.requests = requests
        self.uri = uri
        self.channels_dir = str(channels_dir)
        self._open = open_conn
        self._conn: Any = None
        self._busy: set[str] = set()      # domains being looked up or plugged
        self._refused: set[str] = set()   # domains told of once: cannot plug
        self._handled: dict[str, int | None] = {}  # uuid -> the run already handled
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.counters = {"looked_up": 0, "attached": 0, "refused": 0, "not_asked": 0}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self._stopping = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

    # the libvirt source calls this on the event loop for every running domain it reads
    def on_domain(self, info: domain_xml.DomainInfo) -> None:
        if info.nova is None or self._stopping or self._loop is None:
            return  # not a Nova instance: `nfvha attach` is the way there
        if HEARTBEAT_PORT in info.ports and MESSAGING_PORT in info.ports:
            return
        if info.uuid in self._busy:
            return
        if info.uuid in self._handled and self._handled[info.uuid] == info.run_id:
            return  # this run was handled: what is missing now was taken away on purpose
        self._busy.add(info.uuid)
        task = self._loop.create_task(self._handle(info), name=f"autoplug {info.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, info: domain_xml.DomainInfo) -> None:
        try:
            self.counters["looked_up"] += 1
            wanted = await self.requests.lookup_retrying(
                info.uuid, still_wanted=lambda: not self._stopping)
            if wanted is None:
                return
            missing = [p for p, want in ((HEARTBEAT_PORT, wanted.heartbeat or
                                          wanted.messaging),
                                         (MESSAGING_PORT, wanted.messaging))
                       if want and p not in info.ports]
            if not missing:
                self.counters["not_asked"] += 1
                self._remember(info)
                return
            if not info.virtio_serial:
                self._refuse(info, "it has no virtio-serial controller, and QEMU cannot "
                                   "hot-plug one (give its image hw_qemu_guest_agent=yes, so "
                                   "that Nova adds the controller)")
                self._remember(info)
                return
            try:
                result = await asyncio.to_thread(self._attach, info, wanted.messaging)
            except hotplug.HotplugError as exc:
                self._refuse(info, str(exc))  # tried again at the domain's next read
                return
            self._remember(info)
            if result.changed:
                self.counters["attached"] += 1
                LOG.info("instance %s (%s): its flavor asks for nfvha: %s", info.name,
                         info.uuid, "; ".join(result.changed))
        except asyncio.CancelledError:
            raise
        except Exception:
            LOG.exception("instance %s (%s): plugging its channels failed", info.name,
                          info.uuid)
        finally:
            self._busy.discard(info.uuid)

    def _remember(self, info: domain_xml.DomainInfo) -> None:
        self._handled.pop(info.uuid, None)
        self._handled[info.uuid] = info.run_id
        if len(self._handled) > _HANDLED_MAX:  # domains long deleted: forget the oldest
            del self._handled[next(iter(self._handled))]

    def _refuse(self, info: domain_xml.DomainInfo, why: str) -> None:
        self.counters["refused"] += 1
        if info.uuid not in self._refused:
            self._refused.add(info.uuid)
            LOG.warning("instance %s (%s): its flavor asks for nfvha's channels, but they "
                        "cannot be plugged in: %s", info.name, info.uuid, why)

    def _attach(self, info: domain_xml.DomainInfo, messaging: bool) -> hotplug.HotplugResult:
        import libvirt

        if self._conn is None or not self._conn.isAlive():  # libvirtd restarted meanwhile
            try:
                self._conn = (self._open or libvirt.open)(self.uri)
            except libvirt.libvirtError as exc:
                raise hotplug.HotplugError(f"libvirt at {self.uri}: "
                                           f"{exc.get_error_message()}") from None
        return hotplug.attach_channels(self._conn, info.uuid, messaging=messaging,
                                       channels_dir=self.channels_dir)


class AutoplugSource:
    """A libvirt source whose Nova domains get the channels their flavor asks
    for: the source as it is, with `Autoplug` started and stopped beside it."""

    def __init__(self, source: Any, autoplug: Autoplug) -> None:
        self.source = source
        self.autoplug = autoplug
        source.on_domain = autoplug.on_domain
        self.name = source.name
        self.can_recover = getattr(source, "can_recover", True)

    async def start(self, pool: Any) -> None:
        self.autoplug.start()
        await self.source.start(pool)

    async def stop(self) -> None:
        await self.autoplug.stop()
        await self.source.stop()

    async def explain_loss(self, uuid: str) -> Any:
        return await self.source.explain_loss(uuid)

    async def recover(self, uuid: str, action: str) -> tuple[bool, str]:
        return await self.source.recover(uuid, action)

    def __getattr__(self, name: str) -> Any:  # counters, recent, connected, ...
        return getattr(self.source, name)
