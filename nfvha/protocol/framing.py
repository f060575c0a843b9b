"""Line framing of the virtio-serial byte stream (docs/protocol.md, "Framing").

Rules that bind this file:

- Each message travels as ``b"\\n" + compact JSON + b"\\n"``. A JSON text
  never contains a raw newline, so the receiver splits on ``\\n`` and skips
  empty pieces; there is no length prefix.
- Bytes arrive in arbitrary pieces: one read can hold several messages (the
  real StarlingX bug came from handling only the first), or one byte of a
  message. ``feed`` returns every complete message of the read, in order.
- Untrusted input never raises: garbage yields a ``FrameError`` and the
  decoder resynchronises at the next newline.
- Memory is bounded: no more than ``max_size`` bytes of an unterminated line
  are ever kept. An oversized line yields one ``FrameError("oversized")`` and
  the rest of it, up to its newline, is discarded as it arrives.
- No I/O, no clock, standard library only, Python 3.8 syntax.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

SAMPLE_BYTES = 64


@dataclass(frozen=True)
class FrameError:
    """A dropped fragment (never an exception)."""

    reason: str  # "oversized" | "invalid-json" | "not-an-object" | "non-utf8" | "truncated"
    sample: bytes  # first 64 bytes, for logs


Decoded = Union[dict, FrameError]
# bytes of one line -> its JSON value; raises on anything it does not accept
FastLoads = Callable[[bytes], object]


def _reject_constant(name: str) -> float:
    # NaN / Infinity are not JSON; Python's json accepts them by default.
    raise ValueError("non-standard JSON constant " + name)


# Made once: json.loads/json.dumps with any non-default argument build a new
# decoder/encoder per call, which a thousand channels at 100 ms pay 20,000
# times a second.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_DECODE = _DECODER.decode
_RAW_DECODE = _DECODER.raw_decode
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def _loads(text: str) -> object:
    # A line with no whitespace around its value (every sender's) in one call;
    # anything else through decode, which skips the whitespace or raises.
    try:
        obj, end = _RAW_DECODE(text)
    except ValueError:
        return _DECODE(text)
    return obj if end == len(text) else _DECODE(text)


def _parse(line: bytes, fast: Optional[FastLoads] = None) -> Decoded:
    if fast is not None:
        # A faster parser that agrees with this one on every line it accepts
        # (compute/codec.py); whatever it refuses is judged below, so the
        # errors stay this module's.
        try:
            obj = fast(line)
        except Exception:  # noqa: BLE001 - any refusal: the standard path decides
            pass
        else:
            if type(obj) is dict:
                return obj
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return FrameError("non-utf8", line[:SAMPLE_BYTES])
    try:
        obj = _loads(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError; deep nesting raises RecursionError.
        return FrameError("invalid-json", line[:SAMPLE_BYTES])
    if not isinstance(obj, dict):
        return FrameError("not-an-object", line[:SAMPLE_BYTES])
    return obj


class LineDecoder:
    """Incremental splitter: bytes in, decoded objects and errors out."""

    def __init__(self, max_size: int = 4096, fast_loads: Optional[FastLoads] = None) -> None:
        """``fast_loads``: a faster JSON parser tried first (the host side's;
        guests keep the standard library). It must return what ``json``
        would for every line it accepts; lines it refuses go the standard way."""
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self._fast = fast_loads
        self._buf = bytearray()
        # True while skipping the tail of an oversized line up to its newline.
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an unterminated line currently held (always <= max_size)."""
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """Nothing held: the next byte starts a new line."""
        return not self._buf and not self._discarding

    def feed(self, data: bytes) -> List[Decoded]:
        out: List[Decoded] = []
        start = 0
        end = len(data)
        while start < end:
            nl = data.find(b"\n", start)
            if nl == -1:
                self._keep(data, start, end, out)
                break
            if self._discarding:
                self._discarding = False  # the oversized line ends here
            elif len(self._buf) + (nl - start) > self.max_size:
                out.append(FrameError("oversized", self._sample(data, start)))
                self._buf.clear()
            else:
                if self._buf:
                    self._buf += data[start:nl]
                    line = bytes(self._buf)
                    self._buf.clear()
                else:
                    line = data[start:nl]
                if line and not line.isspace():  # (strip() would copy it)
                    out.append(_parse(line, self._fast))
            start = nl + 1
        return out

    def _keep(self, data: bytes, start: int, end: int, out: List[Decoded]) -> None:
        if self._discarding:
            return
        if len(self._buf) + (end - start) > self.max_size:
            out.append(FrameError("oversized", self._sample(data, start)))
            self._buf.clear()
            self._discarding = True
            return
        self._buf += data[start:end]

    def _sample(self, data: bytes, start: int) -> bytes:
        # The line's first bytes whatever the reads were: what is buffered,
        # then this read (tests/test_fuzz_framing_machine.py: split invariance)
        return (bytes(self._buf[:SAMPLE_BYTES]) + data[start : start + SAMPLE_BYTES])[
            :SAMPLE_BYTES]

    def close(self) -> List[FrameError]:
        """End of stream: a trailing unterminated fragment is dropped and reported."""
        out: List[FrameError] = []
        if self._buf.strip() and not self._discarding:
            out.append(FrameError("truncated", bytes(self._buf[:SAMPLE_BYTES])))
        self._buf.clear()
        self._discarding = False
        return out


_CHALLENGE_KEYS = ("version", "revision", "msg_type", "sequence", "heartbeat_challenge")
_CHALLENGE = (b'\n{"version":%d,"revision":%d,"msg_type":"challenge","sequence":%d,'
              b'"heartbeat_challenge":%d}\n')


def encode(msg: dict) -> bytes:
    """b"\\n" + compact JSON + b"\\n" (ASCII-only, so no raw newline can appear)."""
    # A challenge (every guest, every interval) without the encoder: for these
    # keys in this order with int values, the very bytes json gives.
    if msg.get("msg_type") == "challenge" and tuple(msg) == _CHALLENGE_KEYS:
        v, r, s, c = msg["version"], msg["revision"], msg["sequence"], msg["heartbeat_challenge"]
        if type(v) is int and type(r) is int and type(s) is int and type(c) is int:
            return _CHALLENGE % (v, r, s, c)
    return b"\n" + _ENCODE(msg).encode("ascii") + b"\n"
