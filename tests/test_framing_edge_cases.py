"""LineDecoder: split and merged reads, garbage, oversized lines, non-UTF-8, trailing fragments."""
from __future__ import annotations

import json
import random

import pytest

from nfvha.protocol.framing import FrameError, LineDecoder, encode

MSGS = [
    {"version": 3, "msg_type": "challenge_response", "sequence": i, "heartbeat_response": i * 7}
    for i in range(20)
]


def test_encode_is_newline_delimited_compact_json() -> None:
    raw = encode({"a": 1, "b": "x\ny"})
    assert raw == b'\n{"a":1,"b":"x\\ny"}\n'
    assert raw.count(b"\n") == 2  # a newline inside a string is escaped


def test_two_messages_in_one_read_both_delivered() -> None:
    # The real StarlingX bug: a vote lost behind a challenge response in the same read.
    d = LineDecoder()
    assert d.feed(encode(MSGS[0]) + encode(MSGS[1])) == [MSGS[0], MSGS[1]]


def test_byte_at_a_time() -> None:
    d = LineDecoder()
    out = []
    for b in b"".join(encode(m) for m in MSGS[:3]):
        out.extend(d.feed(bytes([b])))
    assert out == MSGS[:3]


@pytest.mark.parametrize("seed", range(25))
def test_random_splits_give_the_same_messages(seed: int) -> None:
    rnd = random.Random(seed)
    stream = b"".join(encode(m) for m in MSGS)
    d = LineDecoder()
    out = []
    pos = 0
    while pos < len(stream):
        n = rnd.randint(1, 90)
        out.extend(d.feed(stream[pos : pos + n]))
        pos += n
    assert out == MSGS
    assert d.close() == []


def test_starlingx_style_lines_without_leading_newline() -> None:
    d = LineDecoder()
    assert d.feed(b'{"a":1}\n{"b":2}\n') == [{"a": 1}, {"b": 2}]


def test_empty_and_whitespace_pieces_are_skipped() -> None:
    d = LineDecoder()
    assert d.feed(b"\n\n\r\n  \n" + encode({"a": 1}) + b"\n\n") == [{"a": 1}]


def test_garbage_resyncs_at_next_newline() -> None:
    d = LineDecoder()
    out = d.feed(b"\x00garbage{{{\n" + encode({"ok": True}))
    assert isinstance(out[0], FrameError) and out[0].reason == "invalid-json"
    assert out[1] == {"ok": True}


def test_garbage_glued_to_a_message_loses_only_that_line() -> None:
    d = LineDecoder()
    out = d.feed(b'xx{"a":1}\n{"b":2}\n')
    assert [type(o) for o in out] == [FrameError, dict]
    assert out[1] == {"b": 2}


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"[1,2,3]", "not-an-object"),
        (b'"text"', "not-an-object"),
        (b"42", "not-an-object"),
        (b'{"a":NaN}', "invalid-json"),
        (b'{"a":Infinity}', "invalid-json"),
        (b"[" * 3000, "invalid-json"),
        (b'{"name":"\xff\xfe"}', "non-utf8"),
        (b'{"a":1', "invalid-json"),
    ],
)
def test_bad_lines_give_frame_errors_never_exceptions(line: bytes, reason: str) -> None:
    d = LineDecoder()
    out = d.feed(line + b"\n" + encode({"next": 1}))
    assert isinstance(out[0], FrameError)
    assert out[0].reason == reason
    assert len(out[0].sample) <= 64
    assert out[1] == {"next": 1}


def test_deeply_nested_object_inside_limit_is_an_error_not_a_crash() -> None:
    d = LineDecoder(max_size=200_000)
    out = d.feed(b'{"a":' * 20000 + b"1" + b"}" * 20000 + b"\n")
    assert len(out) == 1
    assert isinstance(out[0], FrameError) and out[0].reason == "invalid-json"


def test_oversized_line_one_error_then_resync_in_one_read() -> None:
    d = LineDecoder(max_size=4096)
    big = b"A" * (1024 * 1024)
    out = d.feed(big + b"\n" + encode({"after": 1}))
    assert len(out) == 2
    assert isinstance(out[0], FrameError) and out[0].reason == "oversized"
    assert out[0].sample == b"A" * 64
    assert out[1] == {"after": 1}


def test_oversized_line_in_chunks_is_never_buffered_whole() -> None:
    d = LineDecoder(max_size=4096)
    errors = []
    peak = 0
    for _ in range(256):  # 1 MB in 4 KB pieces, no newline
        errors.extend(d.feed(b"B" * 4096 + b"C"))
        peak = max(peak, d.buffered)
    assert peak <= 4096
    assert [e.reason for e in errors] == ["oversized"]  # exactly one error for one line
    out = d.feed(b"tail of the big line\n" + encode({"after": 2}))
    assert out == [{"after": 2}]


def test_line_of_exactly_max_size_is_accepted() -> None:
    payload = {"k": ""}
    base = len(json.dumps(payload, separators=(",", ":")))
    payload["k"] = "x" * (4096 - base)
    line = json.dumps(payload, separators=(",", ":")).encode()
    assert len(line) == 4096
    d = LineDecoder(max_size=4096)
    assert d.feed(line[:2000]) == []
    assert d.feed(line[2000:] + b"\n") == [payload]
    assert d.feed(b"x" * 4097 + b"\n")[0].reason == "oversized"


def test_trailing_fragment_is_dropped_on_close() -> None:
    d = LineDecoder()
    assert d.feed(encode({"a": 1}) + b'{"partial":') == [{"a": 1}]
    errors = d.close()
    assert len(errors) == 1 and errors[0].reason == "truncated"
    assert errors[0].sample == b'{"partial":'
    assert d.close() == []  # and it is gone


def test_non_utf8_split_across_reads() -> None:
    d = LineDecoder()
    assert d.feed(b'{"a":"\xc3') == []
    assert d.feed(b'\xa9"}\n') == [{"a": "\u00e9"}]  # a valid 2-byte char split in two reads
    out = d.feed(b'{"a":"\xc3"}\n')
    assert out[0].reason == "non-utf8"


def test_max_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineDecoder(max_size=0)


BAD_LINES = [
    (b"\xff\xfe\xfd", "non-utf8"),
    (b"{not json", "invalid-json"),
    (b"[1]", "not-an-object"),
    (b"Z" * 5000, "oversized"),
]


@pytest.mark.parametrize("seed", range(40))
def test_random_mix_of_good_and_bad_lines_in_random_pieces(seed: int) -> None:
    # Property: whatever the split, every valid message comes out once, in order, and
    # every bad line gives exactly one error with its reason, in the same place.
    rnd = random.Random(seed)
    expected: list = []
    stream = b""
    for i in range(rnd.randint(5, 40)):
        if rnd.random() < 0.3:
            line, reason = rnd.choice(BAD_LINES)
            stream += b"\n" + line + b"\n"
            expected.append(reason)
        else:
            msg = {"i": i, "s": "\u00e9" * rnd.randint(0, 50)}
            stream += encode(msg)
            expected.append(msg)
        stream += b"\n" * rnd.randint(0, 2)
    d = LineDecoder(max_size=4096)
    got: list = []
    pos = 0
    while pos < len(stream):
        n = rnd.choice([1, 2, 3, 7, 64, 500, 4095, 4096, 4097, 10000])
        got += d.feed(stream[pos : pos + n])
        assert d.buffered <= 4096
        pos += n
    got = [g.reason if isinstance(g, FrameError) else g for g in got]
    assert got == expected
