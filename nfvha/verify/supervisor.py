"""nfvha's own restart supervisor: a stand-in for a cluster manager.

Used only while no real cluster manager is wired into a scenario. It is NOT
a cluster manager (no membership, no fencing, no monitor operation of its
own: it just waits for its child to exit), and scenarios that use it say so:
Req 5.4.5 / 5.4.8 / 5.4.11 fail with "no cluster manager".
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, List, Optional, Sequence

OnEvent = Callable[[str, float, str], None]


class Supervised:
    """Runs `argv` as our child; restarts it `restart_delay` s after it dies."""

    kind = "nfvha-supervisor"

    def __init__(self, name: str, argv: Sequence[str], *, restart_delay: float = 1.0,
                 on_event: Optional[OnEvent] = None) -> None:
        self.name, self.argv, self.restart_delay = name, list(argv), restart_delay
        self.on_event = on_event
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.restarts: List[float] = []
        self._task: Optional[asyncio.Task] = None
        self._stopping = False

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def _emit(self, kind: str, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, time.monotonic(), detail)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(*self.argv)
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            rc = await self.proc.wait()      # we are the parent: no zombie lingers
            if self._stopping:
                return
            self._emit("instance_exited", f"{self.name} pid {self.proc.pid} exit {rc}")
            await asyncio.sleep(self.restart_delay)
            if self._stopping:
                return
            self.proc = await asyncio.create_subprocess_exec(*self.argv)
            self.restarts.append(time.monotonic())
            self._emit("instance_restarted", f"{self.name} pid {self.proc.pid}")

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._task is not None:
            self._task.cancel()
