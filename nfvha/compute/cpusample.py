"""Could the guest have answered? Its CPU counters, read for the host machine.

The host heartbeat machine asks (``host.wants_sample``) only when a
challenge is still unanswered close to its response deadline, so a guest
that answers in a few milliseconds costs no reading at all. What it gets:

- the guest's own process (QEMU, or whatever process holds the other end of
  the channel socket, from SO_PEERCRED): the sum over its threads of
  ``/proc/<pid>/task/<tid>/schedstat`` (ns on a CPU, ns runnable but
  waiting; CFS bandwidth throttling counts as waiting, so a VM capped by its
  cgroup shows as starved);
- else, when the peer is this very process (in-process stand-ins) or cannot
  be read: the host's CPU pressure (PSI ``some`` total, microseconds during
  which some task waited for a CPU), marked ``own=False``: it may extend a
  deadline but never makes a guest ``Starved``.
"""
from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import termios

from nfvha.protocol.host import CpuSample

_PSI = "/proc/pressure/cpu"
_UCRED = struct.Struct("3i")


def peer_pid(sock: socket.socket | None) -> int | None:
    """The pid at the other end of a connected unix socket (None if unknown)."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        pid, _uid, _gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return None
    return pid if pid > 0 and pid != os.getpid() else None


def process_sample(pid: int) -> CpuSample | None:
    """The process's threads' schedstat, summed, and whether one of them is
    runnable now (its stat's state R: the kernel counts a wait in schedstat
    only once it ends). None: gone or unreadable."""
    run = wait = 0
    runnable = False
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"{base}/{tid}/schedstat", "rb") as f:
                fields = f.read().split()
            with open(f"{base}/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # a thread that just ended
        if len(fields) >= 2:
            run += int(fields[0])
            wait += int(fields[1])
        # "pid (comm) S ...": comm may hold spaces and parentheses
        state_at = stat.rfind(b")") + 2
        runnable = runnable or stat[state_at:state_at + 1] == b"R"
    return CpuSample(run, wait, own=True, runnable=runnable)


def host_pressure() -> CpuSample | None:
    """The host's CPU pressure as a sample (None: no PSI on this kernel)."""
    try:
        with open(_PSI, "rb") as f:
            some = f.readline()
    except OSError:
        return None
    for field in some.split():
        if field.startswith(b"total="):
            return CpuSample(0, int(field[6:]) * 1000, own=False)
    return None


def sample(pid: int | None) -> CpuSample | None:
    """The best evidence there is for the guest behind ``pid``."""
    if pid is not None:
        got = process_sample(pid)
        if got is not None:
            return got
    return host_pressure()


def unread_bytes(fd: int) -> int:
    """Bytes waiting in a socket's receive queue (FIONREAD; 0 if unknown)."""
    if fd < 0:
        return 0
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    except OSError:
        return 0
    return buf[0]
