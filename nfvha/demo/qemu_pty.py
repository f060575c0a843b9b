"""Stand-in for QEMU's virtio-serial chardev, for machines without VMs.

QEMU with `-chardev socket,path=P,server=on,wait=off` listens on the UNIX
socket P and moves bytes between its one client (the compute agent) and the
guest's virtio-serial port. Here a pseudo-terminal plays the port: the guest
agent opens the pty's slave exactly as it opens /dev/virtio-ports/NAME in a
VM, so it runs the code it runs in production. This is what
`socat UNIX-LISTEN:P PTY,link=DEV,raw,echo=0` does, kept in-process so the
demo can "cut" a channel (close QEMU's side) and measure it.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path


class PtyChannel:
    def __init__(self, socket_path: Path, device_link: Path) -> None:
        self.socket_path = Path(socket_path)
        self.device_link = Path(device_link)
        self._master = -1
        self._slave = -1
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        # Raw: a virtio port has no line discipline, so neither may the pty.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        with contextlib.suppress(FileNotFoundError):
            self.device_link.unlink()
        self.device_link.symlink_to(os.ttyname(self._slave))
        self._loop.add_reader(self._master, self._from_guest)
        await self.listen()

    async def listen(self) -> None:
        """Open QEMU's listening socket (again, after a cut)."""
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.socket_path))

    async def cut(self) -> None:
        """The QEMU side closes: the compute agent sees EOF, the socket goes away."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def close(self) -> None:
        await self.cut()
        if self._loop is not None and self._master >= 0:
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1
        with contextlib.suppress(FileNotFoundError):
            self.device_link.unlink()

    def _from_guest(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except (BlockingIOError, OSError):
            return
        # Like QEMU without a connected client, bytes with nowhere to go are dropped.
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None and not self._writer.is_closing():
            writer.close()  # QEMU serves one client at a time
            return
        self._writer = writer
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                with contextlib.suppress(BlockingIOError):
                    os.write(self._master, data)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
