"""nfvha.protocol.servergroup was split into sgwire, sgsession and sgclient; the
old module re-exports them, so guest code written against it keeps working."""
from __future__ import annotations

from nfvha.protocol import servergroup, sgclient, sgsession, sgwire

# Every public name the module had before the split.
OLD_NAMES = """
ADDR_HEARTBEAT ADDR_SERVER_GROUP BROADCAST Broadcast BroadcastReceived ClientEvent
ClientOutput ClientState Deliver Envelope GUEST_TO_HOST GuestBroadcast GuestRequest
GuestStatusQuery HOST_TO_GUEST HostBroadcast HostMessage HostNack HostNotification
HostStatusDone HostStatusResponse MAX_DATA MAX_LOG_MSG MAX_MSG MAX_SEQ MAX_STATUS_MEMBERS
MAX_TYPE_ECHO Malformed NACK NOTIFICATION Nacked NotificationReceived PendingStatus
ProtocolError Received Rejected STATUS_QUERY STATUS_RESPONSE STATUS_RESPONSE_DONE Send
SessionConfig SessionEvent SessionOutput SessionState StatusRequest StatusResult
StatusStarted Tick ToController ToHeartbeat UNKNOWN VERSION Violation broadcast
broadcast_to_guest check_broadcast_data client client_step encoded_size for_guest is_uuid
nack notification parse_guest_app parse_host_app session session_step status_answer
status_query status_response status_response_done unwrap wrap
""".split()


def test_every_old_name_is_still_exported() -> None:
    missing = [n for n in OLD_NAMES if n not in servergroup.__all__ or not hasattr(servergroup, n)]
    assert missing == []


def test_the_old_names_are_the_new_modules_objects() -> None:
    for module in (sgwire, sgsession, sgclient):
        for name in module.__all__:
            assert name in dir(module), (module.__name__, name)
            assert getattr(servergroup, name) is getattr(module, name), name


def test_both_machines_share_the_frame_events_and_outputs() -> None:
    for name in ("Received", "Malformed", "Send", "Violation"):
        assert getattr(sgsession, name) is getattr(sgwire, name)
        assert getattr(sgclient, name) is getattr(sgwire, name)


def test_star_import_gives_the_old_names() -> None:
    namespace: dict = {}
    exec("from nfvha.protocol.servergroup import *", namespace)
    assert set(OLD_NAMES) <= set(namespace)


def test_a_guest_and_a_host_talk_through_the_old_module() -> None:
    sg = servergroup
    host = sg.session(sg.SessionConfig(instance="instance-1"))
    _, outs, _ = sg.client_step(sg.client(), sg.Broadcast("hello"), 0.0)
    (send,) = outs
    host, outs2 = sg.session_step(host, sg.Received(send.msg), 0.0)
    assert outs2 == [sg.ToController(sg.BROADCAST,
                                     {"source_instance": "instance-1", "data": "hello"})]
