"""Nothing in the repository points at documents that are not in it.

Code, docstrings, docs and tests once cited a reference file kept beside
the checkout (a sibling directory of interface and architecture notes).
A reader of the repository, or of an installed package,
cannot follow such a pointer: the facts belong in the repository itself
(the wire protocol in docs/protocol.md). This test fails on any such
pointer in any file of the working tree but .git, tracked or new.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Iterator, List

ROOT = Path(__file__).resolve().parent.parent

# Spelled in pieces so that this file does not match itself.
_SHARED = r"\.\./" + "shared" + r"\b|\b" + "shared" + r"/(?:reference|design|seeds|hooks)\b"
_DOCS = ("INTER" + "FACES", "ARCHI" + "TECTURE")
# Untracked trees that are not the project's (virtualenv, build output, caches).
_SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache",
              "build", "dist"}


def _files() -> Iterator[Path]:
    """Every file in the working tree: tracked and untracked-but-not-ignored
    ones from git, or a walk when there is no git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        for top, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
            for name in names:
                yield Path(top) / name
        return
    for rel in out.decode("utf-8", "surrogateescape").split("\0"):
        if rel:
            yield ROOT / rel


def _pattern(present: set) -> re.Pattern[bytes]:
    # Those two documents may be cited only if the repository has one of that name.
    missing = [d for d in _DOCS if f"{d}.md" not in present]
    parts = [_SHARED] + [rf"\b{d}(?:\.md|\s*§)" for d in missing]
    return re.compile("|".join(parts).encode())


def test_no_file_points_outside_the_repository() -> None:
    files = [p for p in _files() if p.is_file()]
    assert len(files) > 50, "the file list is suspiciously short"
    pattern = _pattern({p.name for p in files})
    found: List[str] = []
    for path in files:
        data = path.read_bytes()
        for m in pattern.finditer(data):
            line = data.count(b"\n", 0, m.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}: {m.group().decode(errors='replace')}")
    assert not found, ("pointers to files outside the repository (state the fact here, or "
                       "cite docs/protocol.md or another repository doc):\n" + "\n".join(found))


def test_the_check_sees_a_pointer() -> None:
    pattern = _pattern(set())
    for text in ("see ../" + "sha" + "red/reference/x.txt", _DOCS[0] + ".md §3",
                 _DOCS[0] + " §9", "design in " + _DOCS[1] + ".md"):
        assert pattern.search(text.encode()), text
    for text in ("2 shared cores", "a shared pool", "docs/protocol.md"):
        assert not pattern.search(text.encode()), text
    assert not _pattern({_DOCS[0] + ".md", _DOCS[1] + ".md"}).search(
        (_DOCS[0] + ".md").encode())
