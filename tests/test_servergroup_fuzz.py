"""Random hostile input never raises: host session, guest client, Nova parser, pair machine."""
from __future__ import annotations

import json
import random

import pytest

from nfvha.controller import nova_notifications as nn
from nfvha.guest import splitbrain as sb
from nfvha.protocol import sgclient, sgsession

KEYS = ["version", "source_addr", "dest_addr", "data", "msg_type", "seq", "source_instance",
        "orig_msg_type", "log_msg", "payload", "event_type", "oslo.version", "oslo.message",
        "nova_object.data", "instance_id", "uuid", "state", "state_update", "proto", "kind",
        "epoch", "name", "nonce", "priority", "timestamp"]
ATOMS = [None, True, False, 0, -1, 2, 2**31, 2**64, 1.5, float("1e308"), "", "version",
         "broadcast", "status_query", "status_response", "status_response_done", "nack",
         "notification", "cgcs.server_grp", "cgcs.heartbeat", "x" * 4000, "a\nb", "\u00e9",
         "compute.instance.update", "instance.update", "2.0", sb.PROTO, "active", "claim",
         "grant", "instance-y"]


def _value(rnd: random.Random, depth: int = 0):
    r = rnd.random()
    if depth < 4 and r < 0.3:
        return {rnd.choice(KEYS): _value(rnd, depth + 1) for _ in range(rnd.randint(0, 6))}
    if depth < 4 and r < 0.4:
        return [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return rnd.choice(ATOMS)


def _msg(rnd):
    m = _value(rnd)
    if not isinstance(m, dict):
        m = {"data": m}
    if rnd.random() < 0.5:  # often a plausible envelope with junk inside
        m = {"version": 2, "dest_addr": "cgcs.server_grp", "data": m}
    return m


@pytest.mark.parametrize("seed", range(10))
def test_session_and_client_never_raise(seed):
    rnd = random.Random(seed)
    host = sgsession.session(sgsession.SessionConfig(instance="i", single_port=rnd.random() < 0.5))
    guest = sgclient.client()
    for i in range(500):
        msg = _msg(rnd)
        host, outs = sgsession.session_step(host, sgsession.Received(msg), i * 0.01)
        for o in outs:
            assert isinstance(o, (sgsession.Send, sgsession.ToController, sgsession.ToHeartbeat,
                                  sgsession.Violation))
            if isinstance(o, sgsession.ToController):
                assert o.payload["source_instance"] == "i"
        guest, outs, _ = sgclient.client_step(guest, sgclient.Received(msg), i * 0.01)
        if rnd.random() < 0.05:
            guest, outs, _ = sgclient.client_step(guest, sgclient.StatusRequest(0.5), i * 0.01)


@pytest.mark.parametrize("seed", range(10))
def test_nova_parser_raises_only_notification_error(seed):
    rnd = random.Random(seed)
    for _ in range(500):
        body = _value(rnd)
        if rnd.random() < 0.3:
            body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(body)})
        try:
            ch = nn.parse(body)
        except nn.NotificationError:
            continue
        if ch is not None:
            nn.peer_notification(ch)


@pytest.mark.parametrize("seed", range(10))
def test_pair_machine_never_raises(seed):
    rnd = random.Random(seed)
    st = sb.initial(sb.PairConfig(me="instance-x", peer="instance-y", nonce="n"), 0.0)
    for i in range(500):
        r = rnd.random()
        if r < 0.6:
            v = _value(rnd)
            ev = sb.PeerMessage(rnd.choice(["instance-y", "instance-z"]),
                                json.dumps(v) if rnd.random() < 0.8 else str(v))
        elif r < 0.8:
            v = _value(rnd)
            ev = sb.report_from_notification(v if isinstance(v, dict) else {}) or sb.Tick()
        else:
            ev = sb.StatusAnswer([m for m in [_value(rnd)] if isinstance(m, dict)],
                                 rnd.random() < 0.5, st.query_id)
        st, _, deadline = sb.step(st, ev, i * 0.1)
        assert deadline > i * 0.1
