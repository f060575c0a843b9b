"""A fixed-size ring of float samples: 8 bytes each, no per-sample objects.

A thousand sessions keeping their last 1024 round trips cost 8 MB this way;
a deque of Python floats would cost four times as much and grow the
garbage collector's work.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterator


class Samples:
    __slots__ = ("_data", "_next", "_full")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self._data = array("d", bytes(8 * size))
        self._next = 0
        self._full = False

    def append(self, value: float) -> None:
        self._data[self._next] = value
        self._next += 1
        if self._next == len(self._data):
            self._next = 0
            self._full = True

    def clear(self) -> None:
        self._next = 0
        self._full = False

    def __len__(self) -> int:
        return len(self._data) if self._full else self._next

    def __iter__(self) -> Iterator[float]:
        """Oldest first."""
        if self._full:
            yield from self._data[self._next:]
        yield from self._data[:self._next]
