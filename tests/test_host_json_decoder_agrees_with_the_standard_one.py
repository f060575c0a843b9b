"""The compute agent parses guest lines with msgspec first (compute/codec.py).
Whatever a guest sends, the decoder with that fast path must give exactly
what the standard-library decoder gives: the same dicts, the same errors
(reason and sample), in the same order."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from nfvha.compute import codec
from nfvha.protocol.framing import LineDecoder, encode

MAX = 4096
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
objects = st.dictionaries(st.text(max_size=8), values, max_size=6)
tricky = st.sampled_from([
    b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":1e400}', b'{"a":-1e400}',
    b'{"a":"\\ud800"}', b'{"a":"\\udfff\\ud800"}', b'{"a":"\xed\xa0\x80"}', b"\xff\xfe{}",
    b'{"a":18446744073709551616}', b'{"a":-9223372036854775809}', b'{"a":1,"a":2}',
    b' {"a":1} ', b'\t{"a":1}\r', b'{"a":1}x', b'{"a":01}', b'{"a":1.}', b'{"a":[1,]}',
    b'{"a":"\x01"}', b"\xef\xbb\xbf{}", b"[1,2]", b'"text"', b"3", b"null",
    b'{"a":' + b"[" * 900 + b"]" * 900 + b"}", b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"heartbeat_response":99999999999999999999999}', b'{"a":1e-400}', b'{"":null}'])


def lines(data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["object", "mutated", "tricky", "bytes"]))
    if kind == "object":
        return encode(data.draw(objects))
    if kind == "mutated":  # a valid line with one byte changed, dropped or doubled
        raw = bytearray(json.dumps(data.draw(objects)).encode())
        if raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            op = data.draw(st.sampled_from(["set", "drop", "dup"]))
            if op == "set":
                raw[i] = data.draw(st.integers(0, 255))
            elif op == "drop":
                del raw[i]
            else:
                raw[i:i] = raw[i:i + 1]
        return b"\n" + bytes(raw) + b"\n"
    if kind == "tricky":
        return b"\n" + data.draw(tricky) + b"\n"
    return data.draw(st.binary(max_size=60))


def both(stream: bytes) -> tuple[list, list]:
    return (LineDecoder(MAX).feed(stream), codec.line_decoder(MAX).feed(stream))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_stream_decodes_the_same_with_the_fast_parser(data: st.DataObject) -> None:
    stream = b"".join(lines(data) for _ in range(data.draw(st.integers(1, 6))))
    standard, fast = both(stream)
    assert repr(fast) == repr(standard)  # repr: floats like -0.0 and key order count too


def test_the_fast_parser_is_used_and_refusals_fall_back() -> None:
    # a line msgspec accepts comes from it; one it refuses (NaN) is judged
    # by the standard path: invalid JSON (our decoder refuses the constants)
    calls: list[bytes] = []

    def counting(line: bytes) -> object:
        calls.append(line)
        return codec.loads(line)

    dec = LineDecoder(MAX, fast_loads=counting)
    out = dec.feed(b'\n{"a":1}\n{"a":NaN}\n')
    assert out[0] == {"a": 1}
    assert out[1].reason == "invalid-json"
    assert calls == [b'{"a":1}', b'{"a":NaN}']


def test_a_fast_parser_that_returns_a_non_object_gets_the_standard_answer() -> None:
    dec = LineDecoder(MAX, fast_loads=lambda line: [1])
    assert dec.feed(b'\n{"a":1}\n') == [{"a": 1}]
