"""Guest-side server-group client machine: requests, correlation by seq, timeouts."""
from __future__ import annotations

from nfvha.protocol import sgclient, sgsession, sgwire


def _host(app: dict) -> sgclient.Received:
    return sgclient.Received(sgsession.for_guest(app))


def _sent(out):
    return [o.msg for o in out if isinstance(o, sgclient.Send)]


def test_broadcast_builds_base_layer_message():
    st, out, deadline = sgclient.client_step(sgclient.client(), sgclient.Broadcast("hi"), 0.0)
    assert _sent(out) == [{"version": 2, "source_addr": "cgcs.server_grp",
                           "dest_addr": "cgcs.server_grp",
                           "data": {"version": 2, "msg_type": "broadcast", "data": "hi"}}]
    assert deadline is None


def test_invalid_broadcast_is_rejected_locally():
    for data in ("a" * 3051, "a\nb", 42):
        _, out, _ = sgclient.client_step(sgclient.client(), sgclient.Broadcast(data), 0.0)
        assert not _sent(out)
        assert isinstance(out[0], sgclient.Rejected)


def test_status_collects_responses_until_done():
    st, out, deadline = sgclient.client_step(sgclient.client(), sgclient.StatusRequest(2.0), 10.0)
    (q,) = _sent(out)
    seq = q["data"]["seq"]
    assert deadline == 12.0
    answer = sgwire.status_response(seq, {"instance": "a"})
    st, out, _ = sgclient.client_step(st, _host(answer), 10.1)
    assert out == []
    answer = sgwire.status_response(seq, {"instance": "b"})
    st, out, _ = sgclient.client_step(st, _host(answer), 10.2)
    # StarlingX slip: a stray data in status_response_done
    done = dict(sgwire.status_response_done(seq), data={"instance": "b"})
    st, out, deadline = sgclient.client_step(st, _host(done), 10.3)
    assert out == [sgclient.StatusResult(seq, [{"instance": "a"}, {"instance": "b"}], True)]
    assert deadline is None and st.pending == ()


def test_status_times_out_with_partial_answer():
    st, out, _ = sgclient.client_step(sgclient.client(), sgclient.StatusRequest(1.0), 0.0)
    seq = _sent(out)[0]["data"]["seq"]
    st, _, _ = sgclient.client_step(st, _host(sgwire.status_response(seq, {"i": 1})), 0.5)
    st, out, deadline = sgclient.client_step(st, sgclient.Tick(), 1.0)
    assert out == [sgclient.StatusResult(seq, [{"i": 1}], False)]
    assert deadline is None
    # a late done for the expired seq is a violation, not a crash
    st, out, _ = sgclient.client_step(st, _host(sgwire.status_response_done(seq)), 1.5)
    assert isinstance(out[0], sgclient.Violation)


def test_interleaved_queries_are_correlated_by_seq():
    st = sgclient.client()
    st, o1, _ = sgclient.client_step(st, sgclient.StatusRequest(5.0), 0.0)
    st, o2, _ = sgclient.client_step(st, sgclient.StatusRequest(5.0), 0.0)
    s1, s2 = _sent(o1)[0]["data"]["seq"], _sent(o2)[0]["data"]["seq"]
    assert s1 != s2
    st, _, _ = sgclient.client_step(st, _host(sgwire.status_response(s2, {"q": 2})), 0.1)
    st, _, _ = sgclient.client_step(st, _host(sgwire.status_response(s1, {"q": 1})), 0.1)
    st, out, _ = sgclient.client_step(st, _host(sgwire.status_response_done(s2)), 0.2)
    assert out == [sgclient.StatusResult(s2, [{"q": 2}], True)]
    st, out, _ = sgclient.client_step(st, _host(sgwire.status_response_done(s1)), 0.2)
    assert out == [sgclient.StatusResult(s1, [{"q": 1}], True)]


def test_broadcast_and_notification_from_host():
    st = sgclient.client()
    _, out, _ = sgclient.client_step(st, _host(sgwire.broadcast_to_guest("yo", "instance-2")), 0.0)
    assert out == [sgclient.BroadcastReceived("instance-2", "yo")]
    note = {"payload": {"state": "error"}, "event_type": "compute.instance.update",
            "priority": "INFO", "timestamp": "2026-11-24T03:00:00.000000"}
    _, out, _ = sgclient.client_step(st, _host(sgwire.notification(note)), 0.0)
    assert out == [sgclient.NotificationReceived(note)]


def test_starlingx_broadcast_with_version_string_is_accepted():
    app = {"version": "version", "msg_type": "broadcast", "source_instance": "i-1",
           "data": "d"}
    _, out, _ = sgclient.client_step(sgclient.client(), _host(app), 0.0)
    assert out == [sgclient.BroadcastReceived("i-1", "d")]


def test_nack_for_status_query_ends_the_oldest_query():
    st, out, _ = sgclient.client_step(sgclient.client(), sgclient.StatusRequest(5.0), 0.0)
    seq = _sent(out)[0]["data"]["seq"]
    st, out, _ = sgclient.client_step(st, _host(sgwire.nack("status_query", "rate limit")), 0.1)
    assert sgclient.Nacked("status_query", "rate limit") in out
    assert sgclient.StatusResult(seq, [], False) in out


def test_junk_from_host_is_a_violation():
    st = sgclient.client()
    junk = [{"version": 9}, sgsession.for_guest({"version": 2, "msg_type": "bogus"}),
            sgsession.for_guest({"version": 2, "msg_type": "broadcast", "data": "x"}),
            sgsession.for_guest({"version": 2, "msg_type": "status_response", "seq": "a"}),
            sgsession.for_guest({"version": 2, "msg_type": "notification", "data": "s"})]
    for msg in junk:
        st, out, _ = sgclient.client_step(st, sgclient.Received(msg), 0.0)
        assert [type(o) for o in out] == [sgclient.Violation]


def test_flood_of_responses_is_bounded():
    st, out, _ = sgclient.client_step(sgclient.client(), sgclient.StatusRequest(5.0), 0.0)
    seq = _sent(out)[0]["data"]["seq"]
    for i in range(sgwire.MAX_STATUS_MEMBERS + 10):
        st, out, _ = sgclient.client_step(st, _host(sgwire.status_response(seq, {"i": i})), 0.0)
    assert len(st.pending[0].members) == sgwire.MAX_STATUS_MEMBERS
    assert isinstance(out[0], sgclient.Violation)


def test_outstanding_queries_are_bounded():
    st = sgclient.client()
    for _ in range(st.max_pending):
        st, _, _ = sgclient.client_step(st, sgclient.StatusRequest(5.0), 0.0)
    st, out, _ = sgclient.client_step(st, sgclient.StatusRequest(5.0), 0.0)
    assert isinstance(out[0], sgclient.Rejected)


def test_status_answer_round_trip_through_the_client():
    st, out, _ = sgclient.client_step(sgclient.client(), sgclient.StatusRequest(5.0), 0.0)
    seq = _sent(out)[0]["data"]["seq"]
    members = [{"instance_name": "a"}, {"instance_name": "b"}]
    results = []
    for app in sgwire.status_answer(seq, members):
        st, out, _ = sgclient.client_step(st, _host(app), 0.1)
        results += out
    assert results == [sgclient.StatusResult(seq, members, True)]
