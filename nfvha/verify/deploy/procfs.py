"""What the deployments read about their processes (pid files and /proc),
and how they end the ones they started."""
from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path


def stop_all(procs: Iterable[subprocess.Popen], wait_s: float = 5.0) -> None:
    """SIGTERM every process still running, then reap each, SIGKILLing one
    that outlives `wait_s` (all are asked first, so they stop in parallel)."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(wait_s)


def read_pid(path: Path) -> int | None:
    try:
        txt = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(txt) if txt.isdigit() else None


def is_zombie(pid: int) -> bool:
    """True for a zombie and for a pid that no longer exists: either way, gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        # ProcessLookupError: it exited between the open and the read
        return True
