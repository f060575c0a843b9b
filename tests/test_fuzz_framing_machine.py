"""LineDecoder driven by hypothesis with arbitrary reads (issue 13).

Invariants, checked after every read:
- memory is bounded: never more than max_size bytes of an unterminated line;
- split invariance: what came out so far is exactly what one decoder fed
  all the bytes at once gives (a read boundary changes nothing);
- nothing is lost: every message sent with ``encode`` (not larger than
  max_size) comes out, in order, whatever garbage came before it;
- only dicts and FrameErrors come out, and ``feed`` never raises."""
from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nfvha.protocol.framing import FrameError, LineDecoder, encode

MAX = 256
messages = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.integers(), st.text(max_size=40), st.booleans(), st.none(),
              st.lists(st.integers(), max_size=3)),
    max_size=5).filter(lambda m: len(encode(m)) - 2 <= MAX)
garbage = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"{", b"}", b"[" * 2000, b"\xff\xfe", b"NaN", b'{"a": NaN}', b"[1]",
                     b"\n", b"\r\n", b"1" * 5000, b'{"x": "\\udcff"}', b"x" * (MAX + 1)]),
)


def decode_at_once(data: bytes) -> list:
    return LineDecoder(MAX).feed(data)


class FramingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dec = LineDecoder(MAX)
        self.pending = b""  # bytes queued, fed in pieces by `read`
        self.fed = b""
        self.out: list = []
        self.sent: list = []

    @rule(msg=messages)
    def send_message(self, msg):
        self.pending += encode(msg)
        self.sent.append(msg)

    @rule(junk=garbage)
    def send_garbage(self, junk):
        self.pending += junk

    @precondition(lambda self: self.pending)
    @rule(n=st.integers(1, 400))
    def read(self, n):
        piece, self.pending = self.pending[:n], self.pending[n:]
        self.fed += piece
        got = self.dec.feed(piece)
        assert all(isinstance(x, (dict, FrameError)) for x in got)
        self.out.extend(got)

    @invariant()
    def bounded(self):
        assert self.dec.buffered <= MAX

    @invariant()
    def split_invariant(self):
        assert self.out == decode_at_once(self.fed)

    @invariant()
    def nothing_lost(self):
        if self.pending:
            return  # checked once everything queued was read
        it = iter(x for x in self.out if isinstance(x, dict))
        assert all(any(m == x for x in it) for m in self.sent)  # in order


FramingMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_framing_machine = FramingMachine.TestCase
