"""Host side of one guest's server-group channel: stamping, validation, nacks, rate limit."""
from __future__ import annotations

import json

from nfvha.protocol import sgsession, sgwire
from nfvha.protocol.framing import LineDecoder, encode


def _guest(app: dict, **extra) -> dict:
    msg = {"version": 2, "source_addr": "cgcs.server_grp", "dest_addr": "cgcs.server_grp"}
    msg.update(extra)
    msg["data"] = app
    return msg


def _step(state, event, now=0.0):
    return sgsession.session_step(state, event, now)


def _nacks(outputs):
    return [o.msg["data"] for o in outputs if isinstance(o, sgsession.Send)
            and o.msg["data"].get("msg_type") == "nack"]


def _new(**kw):
    return sgsession.session(sgsession.SessionConfig(instance="instance-0000000a", **kw))


def test_broadcast_is_stamped_with_the_hosts_instance_name():
    st, out = _step(_new(), sgsession.Received(_guest(sgwire.broadcast("hello peers"))))
    assert out == [sgsession.ToController(
        "broadcast", {"source_instance": "instance-0000000a", "data": "hello peers"})]
    assert st.accepted == 1


def test_spoofed_source_instance_in_data_is_stripped_and_reported():
    app = dict(sgwire.broadcast("x"), source_instance="instance-ffffffff")
    _, out = _step(_new(), sgsession.Received(_guest(app)))
    to_ctl = [o for o in out if isinstance(o, sgsession.ToController)]
    assert to_ctl[0].payload["source_instance"] == "instance-0000000a"
    assert any(isinstance(o, sgsession.Violation) and "source_instance" in o.reason for o in out)


def test_spoofed_source_instance_in_base_layer_is_ignored():
    msg = _guest(sgwire.broadcast("x"), source_instance="instance-ffffffff")
    _, out = _step(_new(), sgsession.Received(msg))
    to_ctl = [o for o in out if isinstance(o, sgsession.ToController)]
    assert [o.payload["source_instance"] for o in to_ctl] == ["instance-0000000a"]


def test_status_query_goes_to_controller_with_seq():
    _, out = _step(_new(), sgsession.Received(_guest(sgwire.status_query(7))))
    assert out == [sgsession.ToController("status_query",
                                          {"source_instance": "instance-0000000a", "seq": 7})]


def test_oversized_broadcast_is_nacked_never_cut():
    app = {"version": 2, "msg_type": "broadcast", "data": "a" * 3051}
    _, out = _step(_new(), sgsession.Received(_guest(app)))
    assert not [o for o in out if isinstance(o, sgsession.ToController)]
    (n,) = _nacks(out)
    assert n["orig_msg_type"] == "broadcast" and "3051" in n["log_msg"]


def test_exactly_3050_bytes_pass_counting_utf8_bytes():
    ok = "é" * 1525  # 3050 bytes
    _, out = _step(_new(), sgsession.Received(_guest({"version": 2, "msg_type": "broadcast",
                                                       "data": ok})))
    assert isinstance(out[0], sgsession.ToController)
    _, out = _step(_new(), sgsession.Received(_guest({"version": 2, "msg_type": "broadcast",
                                                       "data": ok + "a"})))
    assert _nacks(out)[0]["orig_msg_type"] == "broadcast"


def test_newline_in_broadcast_data_is_nacked():
    app = {"version": 2, "msg_type": "broadcast", "data": "two\nlines"}
    _, out = _step(_new(), sgsession.Received(_guest(app)))
    assert "newline" in _nacks(out)[0]["log_msg"]


def test_hostile_shapes_are_nacked_not_raised():
    bad = [
        {"version": 3, "data": sgwire.broadcast("x")},
        _guest("not a dict"),
        _guest({"version": 2, "msg_type": "broadcast", "data": 5}),
        _guest({"version": 2, "msg_type": "broadcast"}),
        _guest({"version": 1, "msg_type": "broadcast", "data": "x"}),
        _guest({"version": 2, "msg_type": "status_query", "seq": "1"}),
        _guest({"version": 2, "msg_type": "status_query", "seq": True}),
        _guest({"version": 2, "msg_type": "status_query", "seq": -1}),
        _guest({"version": 2, "msg_type": "status_query", "seq": 2**40}),
        _guest({"version": 2, "msg_type": "notification", "data": {}}),  # host→guest only
        _guest({"version": 2, "msg_type": "x" * 500}),
        _guest({"version": 2, "msg_type": ["list"]}),
        dict(_guest(sgwire.broadcast("x")), dest_addr="cgcs.elsewhere"),
        dict(_guest(sgwire.broadcast("x")), dest_addr="cgcs.heartbeat"),  # not single-port
        dict(_guest(sgwire.broadcast("x")), source_addr=17),
    ]
    for msg in bad:
        st, out = _step(_new(), sgsession.Received(msg))
        assert not [o for o in out if isinstance(o, sgsession.ToController)], msg
        (n,) = _nacks(out)
        assert len(n["orig_msg_type"]) <= 32 and isinstance(n["orig_msg_type"], str)
        assert st.violations >= 1
        # every nack fits StarlingX's 4096-byte buffer
        assert len(encode(sgwire.wrap(n))) < sgwire.MAX_MSG


def test_malformed_frame_gets_nack_unknown():
    dec = LineDecoder()
    (err,) = dec.feed(b"{not json\n")
    _, out = _step(_new(), sgsession.Malformed(err.reason))
    assert _nacks(out) == [sgwire.nack("unknown", "malformed message: invalid-json")]


def test_starlingx_version_slip_is_tolerated():
    app = {"version": "version", "msg_type": "broadcast", "data": "x"}
    _, out = _step(_new(), sgsession.Received(_guest(app)))
    assert isinstance(out[0], sgsession.ToController)


def test_missing_dest_addr_means_server_group():
    msg = {"version": 2, "data": sgwire.broadcast("x")}
    _, out = _step(_new(), sgsession.Received(msg))
    assert isinstance(out[0], sgsession.ToController)


def test_flood_is_rate_limited_with_one_nack_then_silent_drops():
    st = _new(rate_per_s=10.0, burst=5)
    passed, nacks = 0, 0
    for i in range(1000):  # 1000 messages within 0.09 s of fake time
        st, out = _step(st, sgsession.Received(_guest(sgwire.broadcast(str(i)))), now=i * 0.00009)
        passed += sum(isinstance(o, sgsession.ToController) for o in out)
        nacks += len(_nacks(out))
    assert passed == 5  # the burst; less than one token refilled at 10/s
    assert nacks == 1
    assert st.dropped == 995
    st, out = _step(st, sgsession.Received(_guest(sgwire.broadcast("later"))), now=0.2)
    assert isinstance(out[0], sgsession.ToController)


def test_rate_limit_recovers_after_quiet_period_and_renacks_next_flood():
    st = _new(rate_per_s=1.0, burst=2)
    for _ in range(5):
        st, _ = _step(st, sgsession.Received(_guest(sgwire.broadcast("a"))), now=0.0)
    st, out = _step(st, sgsession.Received(_guest(sgwire.broadcast("b"))), now=10.0)
    assert isinstance(out[0], sgsession.ToController)
    kinds = []
    for _ in range(3):
        st, out = _step(st, sgsession.Received(_guest(sgwire.broadcast("c"))), now=10.0)
        kinds.append(("pass" if isinstance(out[0], sgsession.ToController) else "nack")
                     if out else "silent")
    assert kinds == ["pass", "nack", "silent"]


def test_clock_going_backwards_adds_no_tokens():
    st = _new(rate_per_s=1.0, burst=1)
    st, _ = _step(st, sgsession.Received(_guest(sgwire.broadcast("a"))), now=100.0)
    st, out = _step(st, sgsession.Received(_guest(sgwire.broadcast("b"))), now=50.0)
    assert not [o for o in out if isinstance(o, sgsession.ToController)]


def test_malformed_flood_is_also_charged_to_the_bucket():
    st = _new(rate_per_s=1.0, burst=3)
    sent = 0
    for _ in range(100):
        st, out = _step(st, sgsession.Malformed("invalid-json"), now=0.0)
        sent += len(_nacks(out))
    assert sent == 3 + 1  # three malformed nacks, one rate-limit nack


def test_single_port_heartbeat_bypasses_the_bucket():
    st = _new(rate_per_s=1.0, burst=1, single_port=True)
    for _ in range(10):
        st, _ = _step(st, sgsession.Received(_guest(sgwire.broadcast("a"))), now=0.0)
    hb = {"version": 3, "revision": 1, "msg_type": "challenge_response", "sequence": 4}
    msg = {"version": 2, "source_addr": "cgcs.heartbeat", "dest_addr": "cgcs.heartbeat",
           "data": hb}
    st, out = _step(st, sgsession.Received(msg), now=0.0)
    assert out == [sgsession.ToHeartbeat(hb)]


def test_single_port_bad_heartbeat_envelope_is_a_violation():
    st = _new(single_port=True)
    msg = {"version": 2, "dest_addr": "cgcs.heartbeat", "data": "zz"}
    _, out = _step(st, sgsession.Received(msg))
    assert [type(o) for o in out] == [sgsession.Violation]


def test_deliver_wraps_for_the_guest_and_heartbeat_address():
    st = _new()
    app = sgwire.broadcast_to_guest("hi", "instance-0000000b")
    _, out = _step(st, sgsession.Deliver(app))
    assert out == [sgsession.Send({"version": 2, "source_addr": "cgcs.server_grp",
                                   "dest_addr": "cgcs.server_grp", "data": app})]
    _, out = _step(st, sgsession.Deliver({"msg_type": "challenge"},
                                         dest_addr=sgwire.ADDR_HEARTBEAT))
    assert out[0].msg["dest_addr"] == "cgcs.heartbeat"


def test_max_size_broadcast_fits_starlingx_buffer_on_the_way_back():
    data = json.dumps("x")[1:-1] * 3050
    msg = sgsession.for_guest(sgwire.broadcast_to_guest(data, "instance-" + "f" * 56))
    assert len(encode(msg)) <= sgwire.MAX_MSG


def test_status_queries_have_their_own_tighter_bucket():
    # one query makes the controller send one message per member: 1000 queries
    # in a burst must not become 1000 x N messages
    st = _new(status_rate_per_s=2.0, status_burst=4)
    passed, nacked = 0, 0
    for i in range(1000):
        st, out = _step(st, sgsession.Received(_guest(sgwire.status_query(i))), now=0.0)
        passed += sum(isinstance(o, sgsession.ToController) for o in out)
        nacked += sum(n["orig_msg_type"] == "status_query" for n in _nacks(out))
    # 4 pass (status burst); 36 more are nacked as status-limited until the shared
    # bucket of 40 is empty; then one rate-limit nack and silence
    assert passed == 4
    assert nacked == 36 + 1
    # broadcasts still pass while queries are limited
    st2 = _new(status_rate_per_s=2.0, status_burst=1)
    st2, _ = _step(st2, sgsession.Received(_guest(sgwire.status_query(1))), now=0.0)
    st2, out = _step(st2, sgsession.Received(_guest(sgwire.status_query(2))), now=0.0)
    assert _nacks(out)[0]["orig_msg_type"] == "status_query"
    st2, out = _step(st2, sgsession.Received(_guest(sgwire.broadcast("x"))), now=0.0)
    assert isinstance(out[0], sgsession.ToController)
    st2, out = _step(st2, sgsession.Received(_guest(sgwire.status_query(3))), now=0.6)
    assert isinstance(out[0], sgsession.ToController)  # refilled at 2/s
