"""Finding the QEMU chardev sockets of the instances in a directory.

Polling (a scandir every ~200 ms) rather than inotify: it is portable,
cheap for thousands of entries, and also notices a socket that was replaced
(new inode) by a restarted QEMU.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Found:
    uuid: str
    path: str
    inode: int


def scan(directory: Path, pattern: re.Pattern[str],
         known: dict[str, Found] | None = None, *, key_group: str = "uuid",
         lower: bool = True) -> dict[str, Found]:
    """UNIX sockets in `directory` whose names match `pattern` (group
    `key_group` names the instance; without it the whole name does), by
    instance. Uuids are lowered; instance names (messaging sockets) are kept
    as they are (`lower=False`).

    Entries already in `known` with the same inode are not stat()ed again.
    A missing directory yields nothing (it may be created later).
    """
    found: dict[str, Found] = {}
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            m = pattern.match(entry.name)
            if m is None:
                continue
            uuid = m.groupdict().get(key_group) or entry.name
            if lower:
                uuid = uuid.lower()
            try:
                inode = entry.inode()
                old = known.get(uuid) if known else None
                if old is None or old.inode != inode or old.path != entry.path:
                    if not stat.S_ISSOCK(entry.stat(follow_symlinks=True).st_mode):
                        continue
            except OSError:  # vanished while we looked
                continue
            found[uuid] = Found(uuid, entry.path, inode)
    return found
