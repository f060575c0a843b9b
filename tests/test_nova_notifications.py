"""Nova notifications (legacy, versioned, messagingv2 envelope) → InstanceChange."""
from __future__ import annotations

import copy
import json

import pytest

from nfvha.controller import nova_notifications as nn
from nfvha.protocol import sgsession, sgwire
from nfvha.protocol.framing import encode

# Structure copied from OpenStack Nova's published sample
# doc/notification_samples/instance-update.json (openstack/nova, Apache-2.0),
# as a data fixture.
NOVA_INSTANCE_UPDATE_SAMPLE = json.loads("""
{
    "event_type": "instance.update",
    "payload": {
        "nova_object.data": {
            "architecture": "x86_64",
            "audit_period": {
                "nova_object.data": {
                    "audit_period_beginning": "2012-10-01T00:00:00Z",
                    "audit_period_ending": "2012-10-29T13:42:11Z"},
                "nova_object.name": "AuditPeriodPayload",
                "nova_object.namespace": "nova",
                "nova_object.version": "1.0"
            },
            "availability_zone": null,
            "bandwidth": [],
            "created_at": "2012-10-29T13:42:11Z",
            "deleted_at": null,
            "display_name": "some-server",
            "display_description":"some-server",
            "host": "compute",
            "host_name": "some-server",
            "image_uuid": "155d900f-4e14-4e4c-a73d-069cbf4541e6",
            "kernel_id": "",
            "launched_at": null,
            "metadata": {},
            "locked":false,
            "node": "fake-mini",
            "old_display_name": null,
            "os_type": null,
            "progress": 0,
            "ramdisk_id": "",
            "reservation_id": "r-sd3ygfjj",
            "state": "building",
            "task_state": "scheduling",
            "power_state": "pending",
            "ip_addresses": [],
            "state_update": {
                "nova_object.data": {
                    "new_task_state": null,
                    "old_state": "building",
                    "old_task_state": null,
                    "state": "building"},
                "nova_object.name": "InstanceStateUpdatePayload",
                "nova_object.namespace": "nova",
                "nova_object.version": "1.0"},
            "tenant_id": "6f70656e737461636b20342065766572",
            "terminated_at": null,
            "flavor": {
                "nova_object.name": "FlavorPayload",
                "nova_object.data": {
                    "flavorid": "a22d5517-147c-4147-a0d1-e698df5cd4e3",
                    "name": "test_flavor",
                    "root_gb": 1,
                    "vcpus": 1,
                    "ephemeral_gb": 0,
                    "memory_mb": 512,
                    "disabled": false,
                    "rxtx_factor": 1.0,
                    "extra_specs": {},
                    "swap": 0,
                    "is_public": true,
                    "vcpu_weight": 0
                },
                "nova_object.version": "1.2",
                "nova_object.namespace": "nova"
            },
            "user_id": "fake",
            "uuid": "c03c0bf9-f46e-4e4f-93f1-817568567ee2"},
        "nova_object.name": "InstanceUpdatePayload",
        "nova_object.namespace": "nova",
        "nova_object.version": "1.1"},
    "priority": "INFO",
    "publisher_id": "nova-compute:fake-mini"
}
""")

LEGACY = {
    "message_id": "5d1f2a2c-0c50-4b0e-a0a1-2f3f6a3e6f3b",
    "publisher_id": "compute.cmp-1",
    "event_type": "compute.instance.update",
    "priority": "INFO",
    "timestamp": "2026-11-24 03:00:00.123456",
    "payload": {
        "tenant_id": "t1", "instance_id": "0b1e8c3a-1111-4a4a-9999-000000000001",
        "display_name": "vm-a", "host": "cmp-1", "state": "error", "old_state": "active",
        "old_task_state": None, "new_task_state": None, "power_state": 1,
    },
}


def _envelope(inner: dict) -> bytes:
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def test_nova_versioned_sample_parses():
    msg = dict(NOVA_INSTANCE_UPDATE_SAMPLE, timestamp="2026-11-24 03:00:00.000001")
    ch = nn.parse(_envelope(msg))
    assert ch is not None
    assert (ch.uuid, ch.host, ch.state, ch.old_state, ch.task_state, ch.power_state) == (
        "c03c0bf9-f46e-4e4f-93f1-817568567ee2", "compute", "building", "building",
        "scheduling", "pending")
    assert ch.event_type == "instance.update" and ch.timestamp == "2026-11-24 03:00:00.000001"
    assert ch.tenant_id == "6f70656e737461636b20342065766572"
    assert ch.raw["publisher_id"] == "nova-compute:fake-mini"


def test_legacy_update_in_envelope_and_plain_and_str():
    for body in (_envelope(LEGACY), json.dumps(LEGACY), LEGACY, _envelope(LEGACY).decode()):
        ch = nn.parse(body)
        assert ch.uuid == LEGACY["payload"]["instance_id"]
        assert (ch.state, ch.old_state, ch.host, ch.power_state) == (
            "error", "active", "cmp-1", "1")


def test_doctor_shortcut_payload_is_enough():
    # Doctor publishes only {tenant_id, instance_id, state}.
    msg = {"event_type": "compute.instance.update", "priority": "INFO",
           "payload": {"tenant_id": "t", "instance_id": "u-1", "state": "error"}}
    ch = nn.parse(msg)
    assert (ch.uuid, ch.state, ch.host) == ("u-1", "error", None)


def test_other_versioned_instance_event_parses():
    msg = copy.deepcopy(NOVA_INSTANCE_UPDATE_SAMPLE)
    msg["event_type"] = "instance.power_off.end"
    del msg["payload"]["nova_object.data"]["state_update"]
    msg["payload"]["nova_object.data"].update(state="stopped", power_state="shutdown",
                                              task_state=None)
    ch = nn.parse(msg)
    assert (ch.state, ch.power_state, ch.old_state, ch.task_state) == (
        "stopped", "shutdown", None, None)


def test_non_instance_notifications_are_ignored_not_errors():
    assert nn.parse({"event_type": "compute.metrics.update", "payload": {}}) is None
    assert nn.parse({"event_type": "service.update",
                     "payload": {"nova_object.data": {"host": "c"}}}) is None


@pytest.mark.parametrize("junk", [
    b"not json", b"\xff\xfe", b"[1,2]", b"", "null", 42,
    json.dumps({"oslo.version": "1.0", "oslo.message": "{}"}),
    json.dumps({"oslo.version": "2.0", "oslo.message": "nope"}),
    json.dumps({"oslo.version": "2.0", "oslo.message": 5}),
    {"payload": {}},
    {"event_type": "compute.instance.update"},
    {"event_type": "compute.instance.update", "payload": []},
    {"event_type": "compute.instance.update", "payload": {"state": "error"}},
    {"event_type": "compute.instance.update", "payload": {"instance_id": "u", "state": []}},
    {"event_type": "instance.update", "payload": {"uuid": "u"}},
    {"event_type": "instance.update", "payload": {}, "timestamp": 5},
    b"[" * 100000,
    b"{" + b" " * (nn.MAX_BODY + 1) + b"}",
])
def test_junk_raises_a_clear_error(junk):
    with pytest.raises(nn.NotificationError) as err:
        nn.parse(junk)
    assert str(err.value)


def test_peer_notification_has_starlingx_shape_and_fits_guest_buffer():
    ch = nn.parse(_envelope(LEGACY))
    data = nn.peer_notification(ch)
    assert set(data) == {"payload", "event_type", "priority", "timestamp"}
    assert data["payload"]["instance_id"] == ch.uuid and data["payload"]["state"] == "error"
    wire = encode(sgsession.for_guest(sgwire.notification(data)))
    assert len(wire) <= sgwire.MAX_MSG


def test_peer_notification_of_huge_fields_still_fits():
    msg = copy.deepcopy(LEGACY)
    for k in ("display_name", "host", "state", "old_state", "tenant_id"):
        msg["payload"][k] = "\U0001F600" * 5000
    msg["event_type"] = "compute.instance.update" + "x" * 5000
    data = nn.peer_notification(nn.parse(msg))
    wire = encode(sgsession.for_guest(sgwire.notification(data)))
    assert len(wire) <= sgwire.MAX_MSG


def test_versioned_sample_peer_notification_fits():
    data = nn.peer_notification(nn.parse(NOVA_INSTANCE_UPDATE_SAMPLE))
    assert data["payload"]["instance_id"] == "c03c0bf9-f46e-4e4f-93f1-817568567ee2"
    assert data["event_type"] == "instance.update"


def test_from_listener_arguments():
    ch = nn.from_listener("nova-compute:c1", "instance.update",
                          NOVA_INSTANCE_UPDATE_SAMPLE["payload"],
                          {"message_id": "m", "timestamp": "2026-11-24 03:00:00.5"}, "info")
    assert ch.priority == "INFO" and ch.timestamp == "2026-11-24 03:00:00.5"
    assert ch.host == "compute"
