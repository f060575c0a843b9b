"""Each reporter's exact request against its stand-in, and how the answers
map to ack / Retry / Reject (each sink's docstring says which answers are final)."""
from __future__ import annotations

import socket

import pytest

from nfvha.controller import Controller
from nfvha.controller.reporters import Reject, Retry
from nfvha.controller.reporters._openstack import connect
from nfvha.controller.reporters.doctor import DoctorReporter
from nfvha.controller.reporters.log import LogReporter
from nfvha.controller.reporters.masakari import MasakariReporter
from nfvha.controller.reporters.nova import NovaReporter
from nfvha.controller.reporters.vitrage import VitrageReporter
from nfvha.controller.reporters.webhook import WebhookReporter
from nfvha.standins.doctor import DoctorInspectorStandin
from nfvha.standins.masakari import MasakariStandin
from nfvha.standins.nova import NovaStandin
from nfvha.standins.vitrage import VitrageStandin
from nfvha.standins.webhook import WebhookStandin

EVENT = {
    "id": "5b0b5d2e-3f0e-4a53-9d3b-1f4bbd2c9a11",
    "instance_uuid": "0d6c1f2a-77e4-4c2f-9a1e-6a3c2b1d0e9f",
    "host": "compute-7",
    "kind": "heartbeat_loss",
    "corrective_action": "reboot",
    "detail": "2 consecutive misses at 1000 ms",
    "detected_at": "2026-11-24T03:00:01.250000+00:00",
    "received_at": "2026-11-24T03:00:01.251234+00:00",
}


def masakari_conn(url: str):
    return connect(auth_type="none", auth={"endpoint": url},
                   instance_ha_endpoint_override=url + "/v1")


def nova_conn(url: str):
    return connect(auth_type="none", auth={"endpoint": url},
                   compute_endpoint_override=url + "/v2.1")


async def test_webhook_posts_the_event_with_its_id_as_idempotency_key():
    async with WebhookStandin() as hook:
        rep = WebhookReporter(hook.url + "/nfvha/faults")
        try:
            assert await rep.deliver(dict(EVENT)) is None
        finally:
            await rep.aclose()
    [got] = hook.received
    assert (got.method, got.path) == ("POST", "/nfvha/faults")
    assert got.body == EVENT
    assert got.headers["idempotency-key"] == EVENT["id"]
    assert got.headers["content-type"] == "application/json"


async def test_webhook_answers_map_to_retry_and_reject():
    async with WebhookStandin() as hook:
        rep = WebhookReporter(hook.url + "/")
        try:
            for status, exc in ((503, Retry), (500, Retry), (429, Retry), (408, Retry),
                                (400, Reject), (404, Reject)):
                hook.fail_next(1, status)
                with pytest.raises(exc, match=f"HTTP {status}"):
                    await rep.deliver(dict(EVENT))
            assert hook.received == []
        finally:
            await rep.aclose()


async def test_unreachable_sink_is_retry():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rep = WebhookReporter(f"http://127.0.0.1:{port}/", timeout_s=1)
    try:
        with pytest.raises(Retry, match="ConnectError"):
            await rep.deliver(dict(EVENT))
    finally:
        await rep.aclose()


async def test_log_reporter_writes_one_json_line(caplog):
    with caplog.at_level("WARNING", logger="nfvha.faults"):
        await LogReporter().deliver(dict(EVENT))
    [rec] = caplog.records
    assert EVENT["id"] in rec.getMessage() and '"kind": "heartbeat_loss"' in rec.getMessage()


async def test_masakari_gets_a_vm_notification_it_acts_on():
    async with MasakariStandin() as m:
        rep = MasakariReporter(masakari_conn(m.url))
        try:
            note = await rep.deliver(dict(EVENT))
        finally:
            await rep.aclose()
    [got] = m.received
    assert (got.method, got.path) == ("POST", "/v1/notifications")
    assert got.body == {"notification": {
        "type": "VM", "hostname": "compute-7",
        "generated_time": "2026-11-24T03:00:01.250000+00:00",
        "payload": {"event": "LIFECYCLE", "instance_uuid": EVENT["instance_uuid"],
                    "vir_domain_event": "STOPPED_FAILED"}}}
    assert note == f"notification_uuid {m.notifications[0]['notification_uuid']}"


async def test_masakari_400_and_409_are_final_5xx_is_retried_a_duplicate_is_delivered():
    async with MasakariStandin() as m:
        rep = MasakariReporter(lambda: masakari_conn(m.url))  # lazily connected
        try:
            m.fail_next(1, 503)
            with pytest.raises(Retry, match="HTTP 503"):
                await rep.deliver(dict(EVENT))
            await rep.deliver(dict(EVENT))
            # the same notification again: Masakari has it already (its 409 says so)
            note = await rep.deliver(dict(EVENT))
            assert note is not None and note.startswith("duplicate")
            m.fail_next(1, 409, {"conflictingRequest": {"code": 409, "message": (
                "Notification received from host c1 of type VM is ignored as the host "
                "is already under maintenance.")}})
            with pytest.raises(Reject, match="HTTP 409"):
                await rep.deliver({**EVENT, "instance_uuid": "other"})
            m.fail_next(1, 400, {"badRequest": {"code": 400, "message": "bad"}})
            with pytest.raises(Reject, match="HTTP 400"):
                await rep.deliver({**EVENT, "instance_uuid": "other"})
        finally:
            await rep.aclose()
    assert len(m.received) == 1


async def test_masakari_rejection_through_the_controller_is_not_retried(tmp_path):
    async with MasakariStandin() as m:
        m.fail_next(1000, 409, {"conflictingRequest": {"code": 409, "message": "dup"}})
        c = Controller(f"sqlite:///{tmp_path}/m.sqlite",
                       [MasakariReporter(masakari_conn(m.url))], retry_base_s=0.01)
        await c.start()
        try:
            ev = {**EVENT, "detected_mono": 1.0}
            await c.fault(ev)
            await c.wait_idle(10)
            stored = await c.get_event(EVENT["id"])
        finally:
            await c.stop()
    d = stored["deliveries"][0]
    assert (d["status"], d["attempts"]) == ("rejected", 1)
    assert "409" in d["last_error"] and len(m.attempts) == 1


@pytest.mark.parametrize("action", ["none", "log"])
async def test_recovery_sinks_skip_events_that_ask_for_no_action(action, tmp_path):
    async with MasakariStandin() as m, NovaStandin() as n:
        c = Controller(f"sqlite:///{tmp_path}/s.sqlite",
                       [MasakariReporter(masakari_conn(m.url)),
                        NovaReporter(nova_conn(n.url))])
        await c.start()
        try:
            await c.fault({**EVENT, "corrective_action": action})
            await c.wait_idle(10)
            stored = await c.get_event(EVENT["id"])
        finally:
            await c.stop()
    assert m.attempts == [] and n.attempts == []
    for d in stored["deliveries"]:
        assert d["status"] == "delivered"
        assert d["note"] == f"skipped: corrective_action {action}"


async def test_nova_resets_the_instance_to_error():
    async with NovaStandin() as n:
        rep = NovaReporter(nova_conn(n.url))
        try:
            assert await rep.deliver(dict(EVENT)) is None
        finally:
            await rep.aclose()
    [got] = n.received
    assert (got.method, got.path) == ("POST", f"/v2.1/servers/{EVENT['instance_uuid']}/action")
    assert got.body == {"os-resetState": {"state": "error"}}
    assert n.states == {EVENT["instance_uuid"]: "error"}


async def test_nova_unknown_instance_is_final_503_retried():
    async with NovaStandin(servers={"someone-else"}) as n:
        rep = NovaReporter(nova_conn(n.url))
        try:
            with pytest.raises(Reject, match="HTTP 404"):
                await rep.deliver(dict(EVENT))
            n.servers = None
            n.fail_next(1, 503)
            with pytest.raises(Retry, match="HTTP 503"):
                await rep.deliver(dict(EVENT))
        finally:
            await rep.aclose()


async def test_doctor_inspector_gets_a_list_with_one_event():
    async with DoctorInspectorStandin() as d:
        rep = DoctorReporter(d.url)
        try:
            await rep.deliver(dict(EVENT))
        finally:
            await rep.aclose()
    [got] = d.received
    assert (got.method, got.path) == ("PUT", "/events")
    assert got.body == [{
        "id": EVENT["id"], "time": "2026-11-24T03:00:01.250000+00:00",
        "type": "compute.instance.down",
        "details": {"hostname": "compute-7", "status": "down", "monitor": "nfvha",
                    "monitor_event_id": EVENT["id"],
                    "instance_id": EVENT["instance_uuid"], "cause": "heartbeat_loss",
                    "severity": "critical", "corrective_action": "reboot"}}]


async def test_vitrage_gets_an_event_with_its_time_format():
    async with VitrageStandin() as v:
        rep = VitrageReporter(v.url + "/", token_getter=lambda: "tok-123")
        try:
            await rep.deliver({**EVENT, "detected_at": "2026-11-24T05:00:01+02:00"})
        finally:
            await rep.aclose()
    [got] = v.received
    assert (got.method, got.path) == ("POST", "/v1/event")
    assert got.headers["x-auth-token"] == "tok-123"
    assert got.body == {
        "time": "2026-11-24T03:00:01.000000", "type": "compute.instance.down",
        "details": {"hostname": "compute-7", "source": "nfvha", "cause": "heartbeat_loss",
                    "severity": "critical", "status": "down", "monitor_id": "nfvha",
                    "monitor_event_id": EVENT["id"], "instance_id": EVENT["instance_uuid"]}}
