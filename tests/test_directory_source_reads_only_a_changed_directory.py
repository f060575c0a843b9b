"""The directory source (compute/sources/directory.py) reads the instances
directory only when it may have changed: a settled directory (mtime older
than SETTLE_S) whose mtime and inode stayed is not read again until
FULL_EVERY_S; a socket added or replaced is still offered at the next scan,
including one added within the same tick of the file system's clock as the
previous read (the mtime then stays as it was: a recent mtime is never
trusted)."""
from __future__ import annotations

import os
import socket
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from nfvha.compute.sources import directory as dirmod
from nfvha.compute.sources.directory import DirectorySource


class RecordingPool:
    def __init__(self) -> None:
        self.offered: list[str] = []
        self.withdrawn: list[str] = []

    def offer(self, spec: Any) -> None:
        self.offered.append(spec.key)

    def withdraw(self, kind: str, key: str, reason: str | None = None) -> None:
        self.withdrawn.append(key)


def add_socket(d: Path) -> tuple[str, socket.socket]:
    u = str(uuidlib.uuid4())
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / f"cgcs.heartbeat.{u}.sock"))
    s.listen(1)
    return u, s


def set_mtime(d: Path, ns: int) -> None:
    os.utime(d, ns=(ns, ns))


@pytest.fixture
def source(sock_dir: Path):
    src = DirectorySource(sock_dir)
    pool = RecordingPool()
    src._pool = pool  # type: ignore[assignment]  # what start() does, without the scan task
    return src, pool


def test_a_settled_unchanged_directory_is_not_read_and_a_new_socket_is_seen(
        source: tuple[DirectorySource, RecordingPool], sock_dir: Path) -> None:
    src, pool = source
    socks = [add_socket(sock_dir) for _ in range(3)]
    set_mtime(sock_dir, time.time_ns() - 10 * 10**9)  # settled long ago
    src.scan()
    assert sorted(pool.offered) == sorted(u for u, _ in socks)
    reads = src.counters["reads"]
    for _ in range(20):
        src.scan()
    assert src.counters["reads"] == reads  # nothing changed: not read
    u, s = add_socket(sock_dir)  # the mtime moves to now
    src.scan()
    assert pool.offered[-1] == u and src.counters["reads"] == reads + 1
    os.unlink(sock_dir / f"cgcs.heartbeat.{u}.sock")
    src.scan()
    assert pool.withdrawn == [u]
    for _, x in [*socks, (u, s)]:
        x.close()


def test_a_change_within_the_same_clock_tick_is_not_missed(
        source: tuple[DirectorySource, RecordingPool], sock_dir: Path) -> None:
    src, pool = source
    recent = time.time_ns()
    set_mtime(sock_dir, recent)
    src.scan()  # read; its mtime is recent, so not trusted
    u, s = add_socket(sock_dir)
    set_mtime(sock_dir, recent)  # as if the change fell in the same tick
    src.scan()
    assert pool.offered == [u]
    s.close()


def test_even_a_settled_mtime_is_checked_by_a_full_read_now_and_then(
        source: tuple[DirectorySource, RecordingPool], sock_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src, pool = source
    monkeypatch.setattr(dirmod, "FULL_EVERY_S", 0.2)
    old = time.time_ns() - 10 * 10**9
    set_mtime(sock_dir, old)
    src.scan()
    u, s = add_socket(sock_dir)
    set_mtime(sock_dir, old)  # a change the mtime does not show (a clock set back)
    src.scan()
    assert pool.offered == []  # trusted the settled mtime...
    time.sleep(0.25)
    src.scan()
    assert pool.offered == [u]  # ...until the full read
    s.close()


def test_a_missing_directory_is_looked_for_every_time(sock_dir: Path) -> None:
    d = sock_dir / "later"  # (sock_dir: a path short enough for AF_UNIX)
    src = DirectorySource(d)
    pool = RecordingPool()
    src._pool = pool  # type: ignore[assignment]
    src.scan()
    src.scan()
    assert src.counters["reads"] == 2
    d.mkdir()
    u, s = add_socket(d)
    src.scan()
    assert pool.offered == [u]
    s.close()
