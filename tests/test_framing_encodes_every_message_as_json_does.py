"""framing.encode writes a challenge without the JSON encoder: the bytes must be
exactly what json gives for every message, challenge-shaped or not."""
from __future__ import annotations

import json
from typing import Any

import pytest

from nfvha.protocol import heartbeat as hb
from nfvha.protocol.framing import LineDecoder, encode


def _json(msg: dict[str, Any]) -> bytes:
    return b"\n" + json.dumps(msg, separators=(",", ":")).encode("ascii") + b"\n"


@pytest.mark.parametrize("sequence,nonce", [(0, 0), (1, 2**31 - 1), (2**32 - 1, 12345),
                                            (7, 2**70)])
def test_a_challenge_is_the_bytes_json_gives(sequence: int, nonce: int) -> None:
    msg = hb.build_challenge(sequence=sequence, heartbeat_challenge=nonce)
    assert encode(msg) == _json(msg)
    assert LineDecoder(4096).feed(encode(msg)) == [msg]


@pytest.mark.parametrize("msg", [
    # a bool is an int to Python but true/false to JSON
    {"version": 3, "revision": 1, "msg_type": "challenge", "sequence": True,
     "heartbeat_challenge": 5},
    # the same keys in another order
    {"revision": 1, "version": 3, "msg_type": "challenge", "sequence": 1,
     "heartbeat_challenge": 5},
    # one more key, one key fewer, a string where an int goes
    {"version": 3, "revision": 1, "msg_type": "challenge", "sequence": 1,
     "heartbeat_challenge": 5, "extra": "x"},
    {"version": 3, "revision": 1, "msg_type": "challenge", "sequence": 1},
    {"version": 3, "revision": 1, "msg_type": "challenge", "sequence": "1",
     "heartbeat_challenge": 5},
    {"version": 3, "revision": 1, "msg_type": "challenge", "sequence": 1.5,
     "heartbeat_challenge": 5},
    hb.build_init_ack(sequence=3, invocation_id=9),
    hb.build_nack(sequence=3, invocation_id=9, log_msg="not registered \u00e9"),
])
def test_anything_else_is_encoded_by_json(msg: dict[str, Any]) -> None:
    assert encode(msg) == _json(msg)
