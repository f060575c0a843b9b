"""A CPU cap for a process, for the benches that starve someone on purpose:
cgroup v1's cpu controller (cfs_quota_us) or cgroup v2's cpu.max, whichever
this machine mounts. Needs root."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

PERIOD_US = 100_000


def _v1_root() -> Path | None:
    for p in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct")):
        if (p / "cpu.cfs_quota_us").exists():
            return p
    return None


def _v2_root() -> Path | None:
    for p in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        try:
            if "cpu" in (p / "cgroup.controllers").read_text().split():
                return p
        except OSError:
            continue
    return None


def unavailable() -> str | None:
    """Why a CPU cap cannot be set here, or None."""
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    if _v1_root() is None and _v2_root() is None:
        return "no cgroup cpu controller mounted"
    return None


class CpuCap:
    """``with CpuCap(0.05, pid, ...)``: those processes (all their threads) get at
    most that share of one CPU, and go back to the root group on exit."""

    def __init__(self, share: float, *pids: int, period_us: int = PERIOD_US) -> None:
        self.share = share
        self.pids = pids
        self.period_us = period_us
        self.v1 = _v1_root()
        self.root = self.v1 or _v2_root()
        if self.root is None:
            raise RuntimeError("no cgroup cpu controller")
        self.path = self.root / f"nfvha-bench-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> CpuCap:
        self.path.mkdir()
        quota = max(1000, int(self.share * self.period_us))
        if self.v1 is not None:
            (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.path / "cpu.max").write_text(f"{quota} {self.period_us}")
        for pid in self.pids:
            self.add(pid)
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def __exit__(self, *exc: object) -> None:
        assert self.root is not None
        try:
            members = (self.path / "cgroup.procs").read_text().split()
        except OSError:
            members = []
        for pid in members:
            try:
                (self.root / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # gone
        try:
            self.path.rmdir()
        except OSError:
            pass
