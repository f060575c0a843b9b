"""A supervisor process that is a child subreaper and reaps at once.

PID 1 of a container or a VM without an init system reaps orphans only
every second or two, and a daemon whose grandchildren are not reaped sees
them as alive (libvirtd reports a killed QEMU late, ocf:heartbeat:anything's
`kill -0` passes on a zombie). A supervisor that sets
PR_SET_CHILD_SUBREAPER gets every orphan below it reparented to itself and
reaps it the moment SIGCHLD arrives.

Used by the libvirtd supervisor (nfvha/compute/libvirt_daemon.py) and the
Pacemaker one (nfvha/verify/deploy/pacemaker.py). Standard library only,
Linux only.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator

PR_SET_CHILD_SUBREAPER = 36
# what every supervisor waits for: a child's end, and the order to stop
BASE_SIGNALS = frozenset({signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})


def prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name: state,
    ppid, ...) of every process; one gone meanwhile is left out."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        yield int(d), fields


def children_of(ppid: int) -> list[int]:
    """Live (not zombie) children of `ppid`, read from /proc."""
    return [pid for pid, fields in proc_stats() if int(fields[1]) == ppid and fields[0] != "Z"]


class Subreaper:
    """The calling process as a subreaper supervisor of named children.

    Creating it sets PR_SET_CHILD_SUBREAPER and blocks `signals` (SIGCHLD,
    SIGTERM, SIGINT and any `extra`): the supervisor's loop takes them
    with `wait()` (sigtimedwait), never in a handler. Pass `unblock` as the
    children's preexec_fn: the signal mask is inherited across exec, and a
    daemon with SIGCHLD and SIGTERM blocked busy-loops or never stops.
    """

    def __init__(self, children: Iterable[str], extra: Iterable[signal.Signals] = (),
                 exit_note: str = "exited") -> None:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        # Not PR_SET_PDEATHSIG: it fires when the *thread* that forked us ends
        # (asyncio.to_thread...). `caller_died()` notices reparenting instead.
        self.parent = os.getppid()
        self.signals = set(BASE_SIGNALS) | set(extra)
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        self.procs: dict[str, subprocess.Popen | None] = {name: None for name in children}
        self.stopping = False          # exits are expected: not reported
        self.exit_note = exit_note

    @staticmethod
    def say(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} supervisor: {msg}", flush=True)

    def unblock(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)

    def wait(self, timeout: float, signals: Iterable[int] | None = None):
        """The next of `signals` (default: all blocked ones) within `timeout`,
        or None; every child that ended meanwhile is reaped."""
        info = signal.sigtimedwait(self.signals if signals is None else signals, timeout)
        self.reap()
        return info

    def reap(self) -> None:
        """Reaps every ended child and orphan; a named child's exit code goes
        to its Popen (reported unless stopping)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for label, p in self.procs.items():
                if p is not None and p.pid == pid:
                    p.returncode = os.waitstatus_to_exitcode(status)
                    if not self.stopping:
                        self.say(f"{label} {self.exit_note}: {p.returncode}")

    def wait_gone(self, p: subprocess.Popen | None, timeout: float) -> None:
        """Until `p` was reaped or `timeout` passed (only SIGCHLD, SIGTERM
        and SIGINT wake it: an extra signal stays pending for the main loop)."""
        end = time.monotonic() + timeout
        while p is not None and p.returncode is None and time.monotonic() < end:
            signal.sigtimedwait(BASE_SIGNALS, 0.1)
            self.reap()

    def caller_died(self) -> bool:
        return os.getppid() != self.parent

    def kill_leftovers(self, describe: Callable[[int], str] | None = None) -> None:
        """SIGKILL whatever is still below us (orphans reparented here), up to
        three rounds; `describe(pid)` names each one in the log."""
        for _ in range(3):
            kids = children_of(os.getpid())
            if not kids:
                break
            for pid in kids:
                if describe is not None:
                    self.say(f"killing leftover pid {pid} ({describe(pid)})")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
            self.reap()
