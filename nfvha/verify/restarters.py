"""Who brings a killed instance back: a real cluster manager, or our stand-in.

Both offer the same small async interface to scenarios:

    await r.start({name: argv})      # all instances running when it returns
    r.pid(name) -> int | None        # the instance's current pid
    await r.watch(record, victim, stop)   # marks cluster events on the record
    await r.stop()

- `PacemakerRestarter`: Pacemaker + Corosync from Debian as a private
  single-node cluster (nfvha/verify/deploy/pacemaker.py, one per
  invocation: `SharedCluster`); each instance an
  ocf:heartbeat:anything resource monitored every `monitor_ms`. Its events
  carry Pacemaker's own alert timestamps (failed monitor, successful start).
- `SupervisorRestarter`: nfvha's stand-in (supervisor.py), used when the
  cluster cannot run here (no root, no pacemaker); verdicts say so.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .supervisor import Supervised
from .timeline import Record


class SupervisorRestarter:
    kind = "nfvha-supervisor"

    def __init__(self, restart_delay: float = 1.0) -> None:
        self.restart_delay = restart_delay
        self.sups: Dict[str, Supervised] = {}
        self._record: Optional[Record] = None

    async def start(self, instances: Dict[str, Sequence[str]]) -> None:
        for name, argv in instances.items():
            s = Supervised(name, argv, restart_delay=self.restart_delay, on_event=self._on_event)
            self.sups[name] = s
            await s.start()

    def _on_event(self, kind: str, t: float, detail: str) -> None:
        if self._record is not None:
            self._record.mark(kind, t, detail)

    def pid(self, name: str) -> Optional[int]:
        return self.sups[name].pid

    async def watch(self, record: Record, victim: str, stop: asyncio.Event) -> None:
        self._record = record            # the supervisor reports as it happens

    async def stop(self) -> None:
        for s in self.sups.values():
            await s.stop()


class SharedCluster:
    """One private Pacemaker cluster for a whole invocation, started on first use.

    A cluster needs ~25 s to elect its DC, so every scenario of a run adds its
    resources to this one. (Two clusters can run side by side — each has its
    own corosync lock file, tests/test_deploy_pacemaker_isolation.py — but
    one is cheaper.)
    """

    def __init__(self, workdir: Optional[str] = None) -> None:
        self.workdir = workdir
        self.cluster = None
        self.error: Optional[str] = None
        self._lock = asyncio.Lock()
        self._tmp: Optional[str] = None

    async def get(self):
        """The running cluster; raises RuntimeError (with the reason) if it cannot run."""
        async with self._lock:
            if self.cluster is not None:
                return self.cluster
            if self.error is not None:
                raise RuntimeError(self.error)
            why = available()
            if why is not None:
                self.error = f"Pacemaker cannot run here: {why}"
                raise RuntimeError(self.error)
            from .deploy.pacemaker import PacemakerCluster
            self._tmp = self.workdir or tempfile.mkdtemp(prefix="nfvha-pcmk-")
            c = PacemakerCluster(Path(self._tmp))
            try:
                await asyncio.to_thread(c.start)
            except Exception as exc:   # ClusterError, TimeoutError, OSError ...
                self.error = f"Pacemaker did not start: {exc}"
                raise RuntimeError(self.error) from exc
            self.cluster = c
            return c

    async def stop(self) -> None:
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop)
            self.cluster = None
        if self._tmp is not None and self.workdir is None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def available() -> Optional[str]:
    """None if a Pacemaker cluster can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network/mount namespaces)"
    for tool in ("corosync", "pacemakerd", "cibadmin", "crm_mon", "nsenter"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed"
    try:
        from .deploy import pacemaker  # noqa: F401
    except ImportError as exc:
        return f"nfvha.verify.deploy.pacemaker unavailable: {exc}"
    return None


class PacemakerRestarter:
    """Instances as ocf:heartbeat:anything resources of a (shared) cluster."""

    kind = "Pacemaker"

    def __init__(self, shared: SharedCluster, monitor_ms: int = 100) -> None:
        self.shared = shared
        self.monitor_ms = monitor_ms
        self.cluster = None
        self.names: List[str] = []

    available = staticmethod(available)

    async def start(self, instances: Dict[str, Sequence[str]]) -> None:
        self.cluster = await self.shared.get()
        for name, argv in instances.items():
            await asyncio.to_thread(self.cluster.add_process_resource, name, list(argv),
                                    self.monitor_ms)
            self.names.append(name)
        for name in instances:
            await asyncio.to_thread(self.cluster.wait_running, name, 60)

    def pid(self, name: str) -> Optional[int]:
        return self.cluster.resource_pid(name) if self.cluster is not None else None

    async def watch(self, record: Record, victim: str, stop: asyncio.Event) -> None:
        await watch_alerts(self.cluster, record, victim, stop)

    async def stop(self) -> None:
        # Our resources go; the cluster stays for the next scenario (SharedCluster stops it).
        if self.cluster is not None:
            for name in self.names:
                await asyncio.to_thread(self.cluster.remove_resource, name)
        self.names = []


async def watch_alerts(cluster, record: Record, resource: str, stop: asyncio.Event) -> None:
    """Reads Pacemaker's alert log every 10 ms; events carry the alert's own stamp:
    cm_detected (failed monitor) and instance_restarted (successful start)."""
    seen = 0
    while not stop.is_set():
        evs = cluster.op_events(resource) if cluster is not None else []
        for ev in evs[seen:]:
            fault = record.fault_at
            if fault is None or ev.mono < fault - 0.002:
                continue
            what = f"Pacemaker alert: {ev.rsc} {ev.task} rc={ev.rc} (target {ev.target_rc})"
            if ev.task == "monitor" and ev.failed:
                record.mark("cm_detected", ev.mono, what)
            elif ev.task == "start" and ev.rc == 0:
                record.mark("instance_restarted", ev.mono, what)
        seen = len(evs)
        await asyncio.sleep(0.01)


def make(kind: str = "auto", shared: Optional[SharedCluster] = None, *,
         restart_delay: float = 1.0, monitor_ms: int = 100):
    """kind: auto (Pacemaker when it can run here), pacemaker, supervisor."""
    if kind == "supervisor":
        return SupervisorRestarter(restart_delay)
    why = available()
    if why is None:
        return PacemakerRestarter(shared or SharedCluster(), monitor_ms)
    if kind == "pacemaker":
        raise RuntimeError(f"Pacemaker cannot run here: {why}")
    return SupervisorRestarter(restart_delay)
