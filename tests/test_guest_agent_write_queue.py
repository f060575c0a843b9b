"""The agent's non-blocking write queue: bounded, stale answers dropped, partial writes kept."""
from __future__ import annotations

import os

import pytest

from nfvha.guest.device import WriteQueue


def test_newer_challenge_response_replaces_unsent_older_ones() -> None:
    q = WriteQueue()
    q.put("init", b"I")
    q.put("challenge_response", b"R1")
    q.put("action_response", b"V")
    q.put("challenge_response", b"R2")
    assert [d for _, d in q._items] == [b"I", b"V", b"R2"]
    assert q.dropped == 1


def test_bounded_drops_oldest() -> None:
    q = WriteQueue(max_queued=3)
    for i in range(10):
        q.put("init", bytes([65 + i]))
    assert len(q) == 3 and [d for _, d in q._items] == [b"H", b"I", b"J"]
    assert q.dropped == 7


def test_flush_into_a_full_pipe_keeps_the_rest_and_a_partial_message_whole() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        q = WriteQueue()
        big = b"x" * 200_000  # larger than a pipe buffer: a partial write
        q.put("init", big)
        q.put("exit", b"E")
        assert q.flush(w) is False and len(q) == 2
        q.put("challenge_response", b"R")  # a half-written item must not be dropped
        got = b""
        while len(got) < len(big) + 2:
            got += os.read(r, 1 << 20)
            q.flush(w)
        assert got == big + b"E" + b"R"
        assert q.flush(w) is True and len(q) == 0
    finally:
        os.close(r)
        os.close(w)


def test_flush_raises_when_the_reader_is_gone() -> None:
    r, w = os.pipe()
    os.close(r)
    q = WriteQueue()
    q.put("init", b"I")
    with pytest.raises(OSError):
        q.flush(w)
    os.close(w)
