"""systemd's notify protocol (sd_notify(3)), standard library only: it runs in
VM images (Python >= 3.8) as well as on the hosts.

Under a unit with ``Type=notify`` the services say ``READY=1`` once they
serve, ``STOPPING=1`` on the way out, and with ``WatchdogSec=`` they send
``WATCHDOG=1`` every half period *from their event loop*: a loop that
hangs stops pinging, and systemd kills and restarts the service (a crash
is covered by ``Restart=always``). Without ``NOTIFY_SOCKET`` (not under
systemd) every call does nothing. See etc/systemd/.
"""
import asyncio
import os
import socket
from typing import Mapping, Optional


class Notifier:
    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # the abstract namespace
            addr = "\0" + addr[1:]
        self.address: Optional[str] = addr if addr[:1] in ("/", "\0") else None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process meant; a child that inherited the
        # environment must not ping for its parent
        self.watchdog_s: Optional[float] = (
            int(usec) / 1e6 if usec.isdigit() and int(usec) > 0
            and (not pid or pid == str(os.getpid())) else None)
        self._sock: Optional[socket.socket] = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Sends ``KEY=value`` lines in one datagram; False if not sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
            return True
        except OSError:
            return False  # systemd away (restarting): never fatal to the service

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def watchdog(self) -> None:
        """Pings every half watchdog period from the running loop until cancelled."""
        if self.watchdog_s is None or self.address is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
