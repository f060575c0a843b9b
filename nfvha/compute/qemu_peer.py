"""Which VM is on the other end of a QEMU chardev socket.

The heartbeat socket is named by instance uuid (``cgcs.heartbeat.<uuid>.sock``),
the server-group socket by instance name (``cgcs.messaging.<name>.sock``).
With Nova, the controller links the two from Nova's records. Without Nova
(plain libvirt/QEMU) nothing did, so a group named by instance names never
heard of its members' heartbeat, and one named by uuids never heard their
broadcasts. QEMU itself knows both: libvirt starts it with
``-name guest=<name>,...`` and ``-uuid <uuid>``. QEMU is the listening end of
the chardev socket, so ``SO_PEERCRED`` on our connected end names its pid,
and its command line names the VM. The host sets that command line; a guest
cannot touch it.
"""
from __future__ import annotations

import socket
import struct
from typing import Optional, Sequence

from nfvha.protocol.sgwire import is_uuid

MAX_CMDLINE = 1 << 20      # a QEMU command line is a few kB; never read more


def peer_pid(sock: socket.socket) -> Optional[int]:
    """The pid of the process that listens on the other end (Linux), or None."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, _uid, _gid = struct.unpack("3i", raw)
    return pid if pid > 0 else None


def parse_cmdline(argv: Sequence[str]) -> tuple[Optional[str], Optional[str]]:
    """(uuid, name) from a QEMU command line; either may be None.

    ``-name`` is ``NAME`` or ``guest=NAME[,key=value...]`` (libvirt's form);
    ``-uuid`` must be a uuid. Options may also be written ``--name``.
    """
    uuid: Optional[str] = None
    name: Optional[str] = None
    for opt, value in zip(argv, argv[1:]):
        opt = opt[1:] if opt.startswith("--") else opt
        if opt == "-uuid" and is_uuid(value):
            uuid = value.lower()
        elif opt == "-name":
            first = value.split(",", 1)[0]
            if first.startswith("guest="):
                first = first[len("guest="):]
            elif "=" in first:              # "process=..." alone: no guest name
                first = ""
            name = first or None
    return uuid, name


def identify(pid: int) -> tuple[Optional[str], Optional[str]]:
    """(uuid, name) of the VM run by process `pid`, from /proc; (None, None)
    if it is not a QEMU we can read."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            raw = f.read(MAX_CMDLINE)
    except OSError:                          # gone, or not ours to read
        return None, None
    argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0")]
    return parse_cmdline(argv)


def vm_of(sock: socket.socket) -> tuple[Optional[str], Optional[str]]:
    """(uuid, name) of the VM whose chardev `sock` is connected to."""
    pid = peer_pid(sock)
    return identify(pid) if pid is not None else (None, None)
