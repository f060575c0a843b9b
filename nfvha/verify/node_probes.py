"""Probes that run *on a node* (Yardstick's monitors placed per node).

`NodeProcessProbe` watches one process on any node (local, namespace, ssh)
through one persistent command: a POSIX-shell loop on the node reads
/proc/PID/stat every `interval` and prints 1 (alive) or 0 (gone or zombie),
and the probe stamps each line on arrival with this machine's monotonic
clock. Over ssh that is one session for the whole run — no handshake and
no process spawn per sample, so the resolution is the loop's, ~10 ms, plus
the one-way transit, which is the same for every line (it shifts, it does
not blur).
"""
from __future__ import annotations

import asyncio
import time
from typing import Optional

from .nodes import Node
from .probes import Probe
from .timeline import Record, Sample

# dash-friendly: only builtins but `sleep`; a zombie counts as dead.
_LOOP = ("P={pid}; while :; do "
         "if read -r s 2>/dev/null < /proc/$P/stat; then "
         "case \"$s\" in *') Z '*|*') X '*) echo 0;; *) echo 1;; esac; "
         "else echo 0; fi; sleep {interval}; done")


class NodeProcessProbe(Probe):
    """Presence of one process on a node; `target` is a pid or a pgrep -f
    pattern (resolved once, on the node, when the probe starts)."""

    def __init__(self, node: Node, target: int | str, *, interval: float = 0.01,
                 name: str = "process") -> None:
        self.node, self.target, self.interval, self.name = node, target, interval, name
        self.pid: Optional[int] = None
        self._proc: Optional[asyncio.subprocess.Process] = None

    async def _resolve(self) -> int:
        if isinstance(self.target, int):
            return self.target
        pids = await self.node.pids(self.target)
        if not pids:
            raise LookupError(f"no process matches {self.target!r} on {self.node.name}")
        return pids[0]

    async def once(self) -> Sample:
        """One sample by a one-off command (a round trip); run() streams instead."""
        pid = self.pid or await self._resolve()
        t0 = time.monotonic()
        rc, out, _ = await self.node.run(["sh", "-c", f"cat /proc/{pid}/stat"])
        t1 = time.monotonic()
        state = out[out.rfind(")") + 2:][:1] if rc == 0 else ""
        ok = rc == 0 and state not in ("Z", "X", "")
        return Sample((t0 + t1) / 2, ok, 1000.0 * (t1 - t0), self.name,
                      f"pid {pid} on {self.node.name}")

    async def run(self, record: Record, stop: asyncio.Event, on_change=None) -> None:
        self.pid = await self._resolve()
        script = _LOOP.format(pid=int(self.pid), interval=f"{self.interval:.3f}")
        self._proc = await self.node.spawn(["sh", "-c", script],
                                           stdin=asyncio.subprocess.DEVNULL,
                                           stdout=asyncio.subprocess.PIPE,
                                           stderr=asyncio.subprocess.DEVNULL)
        assert self._proc.stdout is not None
        detail = f"pid {self.pid} on {self.node.name}"
        last: Optional[bool] = None
        prev = time.monotonic()
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                reader = asyncio.create_task(self._proc.stdout.readline())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():
                    reader.cancel()
                    break
                line = reader.result()
                now = time.monotonic()
                if not line:
                    # the loop (or the ssh session) ended: that is a failed sample
                    record.add(Sample(now, False, 0.0, self.name, f"{detail}: probe ended"))
                    break
                ok = line.strip() == b"1"
                # latency = spacing of the lines: the probe's own resolution
                record.add(Sample(now, ok, 1000.0 * (now - prev), self.name, detail))
                if on_change is not None and ok != last:
                    on_change(ok, now, detail)
                last, prev = ok, now
        finally:
            stopper.cancel()
            await self.close()

    async def close(self) -> None:
        p, self._proc = self._proc, None
        if p is not None and p.returncode is None:
            # ending the local end (ssh, ip netns exec) ends the loop: sh dies
            # of SIGPIPE at its next echo
            p.kill()
            await p.wait()
