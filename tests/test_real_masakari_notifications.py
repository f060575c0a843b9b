"""nfvha's Masakari sink against the real Masakari (PyPI, API and engine),
authenticated by the real Keystone, its engine driving the Nova stand-in.

The operator's part is done as an operator does it: a failover segment and
the compute host (named as the compute agent's host) registered through
Masakari's API. Then each test says what the real service answered.
"""
from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from nfvha.controller import Controller
from nfvha.controller.reporters._openstack import connect
from nfvha.controller.reporters.masakari import MasakariReporter
from nfvha.standins.nova import NovaStandin
from tests.test_controller_helpers import fault

pytestmark = [pytest.mark.system, pytest.mark.slow]


class Cloud:
    """The admin's and nfvha's service user's way into the real cloud."""

    def __init__(self, ks: Any) -> None:
        self.ks = ks
        self._admin: Any = None
        self.user = f"nfvha-{secrets.token_hex(4)}"
        self.password = secrets.token_urlsafe(12)
        # Masakari's notification API is admin_api (role admin)
        ks.add_user(self.user, self.password, ["admin"])

    def nfvha(self) -> Any:
        """The connection nfvha's [masakari] cloud would give."""
        return connect(auth_url=self.ks.url, username=self.user, password=self.password,
                       project_name="service", user_domain_name="Default",
                       project_domain_name="Default", region_name="RegionOne")

    async def admin(self, fn: Callable[[Any], Any]) -> Any:
        """Runs an openstacksdk call as the admin, off the event loop (the
        Nova stand-in answering Masakari lives on it)."""
        def run() -> Any:
            if self._admin is None:  # one login for all: each costs a Keystone round
                self._admin = self.ks.admin()
            return fn(self._admin)

        return await asyncio.to_thread(run)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    async def register(self, host: str, **host_attrs: Any) -> Any:
        """A failover segment with `host` in it, as the operator registers them."""
        seg = await self.admin(lambda c: c.instance_ha.create_segment(
            name=f"seg-{host}", recovery_method="auto", service_type="COMPUTE"))
        await self.admin(lambda c: c.instance_ha.create_host(
            seg.uuid, name=host, type="COMPUTE", control_attributes="SSH", **host_attrs))
        return seg

    async def notification(self, notification_uuid: str) -> Any:
        return await self.admin(lambda c: c.instance_ha.get_notification(notification_uuid))

    async def wait_status(self, notification_uuid: str, want: set[str],
                          timeout: float = 120) -> Any:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            n = await self.notification(notification_uuid)
            if n.status in want:
                return n
            assert loop.time() < end, f"notification still {n.status} after {timeout} s"
            await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def cloud(real_masakari) -> Iterator[Cloud]:
    c = Cloud(real_masakari.keystone)
    yield c
    c.close()


def _host() -> str:
    return f"cmp-{secrets.token_hex(4)}"


async def _deliver(cloud: Cloud, tmp_path: Any, *events: dict[str, Any]) -> list[dict]:
    """Each event through a controller whose only sink is Masakari; the
    stored deliveries."""
    c = Controller(f"sqlite:///{tmp_path}/m-{uuid.uuid4().hex[:6]}.sqlite",
                   [MasakariReporter(cloud.nfvha)], retry_base_s=0.05, retry_max_s=0.2)
    await c.start()
    try:
        out = []
        for ev in events:
            await c.fault(ev)
            await c.wait_idle(60)
            [d] = (await c.get_event(ev["id"]))["deliveries"]
            out.append(d)
        return out
    finally:
        await c.stop()


def _note_uuid(delivery: dict) -> str:
    note = delivery.get("note") or ""
    assert note.startswith("notification_uuid "), delivery
    return note.split()[1]


async def test_the_engine_recovers_the_vm_and_finishes(cloud: Cloud, tmp_path) -> None:
    """Real Masakari accepts the sink's VM notification (LIFECYCLE /
    STOPPED_FAILED) for a registered host, with nfvha's token from the real
    Keystone; its engine runs the instance-failure flow against the Nova
    stand-in (show server, os-stop, wait SHUTOFF, os-start, wait ACTIVE)
    and the notification ends `finished`."""
    host, vm = _host(), str(uuid.uuid4())
    nova = NovaStandin(compute_hosts={host})
    await nova.start(port=cloud.ks.nova_port)
    try:
        await cloud.register(host)
        [d] = await _deliver(cloud, tmp_path, fault(host=host, instance_uuid=vm))
        assert d["status"] == "delivered", d
        n = await cloud.wait_status(_note_uuid(d), {"finished", "error", "failed",
                                                    "ignored"})
        assert n.status == "finished", n
        assert n.type == "VM" and n.payload["instance_uuid"] == vm
        assert n.payload == {"event": "LIFECYCLE", "instance_uuid": vm,
                             "vir_domain_event": "STOPPED_FAILED"}
        assert [(a[0], a[1]) for a in nova.actions] == [(vm, "os-stop"), (vm, "os-start")]
        assert nova.states[vm] == "active"
        # the engine asked as Masakari's privileged user, with a Keystone token
        stops = [r for r in nova.received if r.path.endswith("/action")]
        assert all(r.headers.get("x-auth-token") for r in stops)
    finally:
        await nova.stop()


async def test_an_unregistered_host_is_final_and_says_what_to_register(
        cloud: Cloud, tmp_path) -> None:
    """Real Masakari answers 400 "Host with name ... could not be found."
    for a host in no failover segment: the delivery is rejected (not
    retried), its error names the host and what to do."""
    host = _host()
    [d] = await _deliver(cloud, tmp_path, fault(host=host))
    assert d["status"] == "rejected" and d["attempts"] == 1, d
    assert f"host {host} is in no Masakari failover segment" in d["last_error"]
    assert f"Host with name {host} could not be found" in d["last_error"]


async def test_a_duplicate_is_delivered_with_a_note(cloud: Cloud, tmp_path) -> None:
    """A second fault of the same VM from the same host within Masakari's
    duplicate_notification_detection_interval: real Masakari answers 409
    "... is duplicate." and creates nothing; nfvha counts it delivered (the
    first notification's recovery covers it) and notes the duplicate."""
    host, vm = _host(), str(uuid.uuid4())
    nova = NovaStandin(compute_hosts={host})
    await nova.start(port=cloud.ks.nova_port)
    try:
        await cloud.register(host)
        first, again = await _deliver(cloud, tmp_path, fault(host=host, instance_uuid=vm),
                                      fault(host=host, instance_uuid=vm))
        assert first["status"] == "delivered" and first["note"].startswith(
            "notification_uuid "), first
        assert again["status"] == "delivered", again
        assert again["note"].startswith("duplicate: Masakari already has this notification")
        assert "is duplicate" in again["note"]
        listed = await cloud.admin(lambda c: list(c.instance_ha.notifications()))
        assert [(n.payload or {}).get("instance_uuid") for n in listed].count(vm) == 1
        await cloud.wait_status(_note_uuid(first), {"finished"})
        # and after the first one's recovery finished: Masakari's duplicate check
        # looks at generated_time (the interval), not at the first one's status,
        # so a repeat (a delivery taken over from a killed controller) starts
        # no second recovery
        [late] = await _deliver(cloud, tmp_path, fault(host=host, instance_uuid=vm))
        assert late["status"] == "delivered", late
        assert late["note"].startswith("duplicate: Masakari already has this notification")
    finally:
        await nova.stop()


async def test_a_host_on_maintenance_is_final(cloud: Cloud, tmp_path) -> None:
    """A host the operator put on maintenance (a planned operation): real
    Masakari answers 409 "... ignored as the host is already under
    maintenance."; the delivery is rejected, not retried, and says why."""
    host = _host()
    nova = NovaStandin(compute_hosts={host})
    await nova.start(port=cloud.ks.nova_port)
    try:
        await cloud.register(host, on_maintenance=True)
        [d] = await _deliver(cloud, tmp_path, fault(host=host))
    finally:
        await nova.stop()
    assert d["status"] == "rejected" and d["attempts"] == 1, d
    assert f"host {host} is on maintenance in Masakari" in d["last_error"]
    assert "under maintenance" in d["last_error"]


async def test_an_instance_in_a_nova_task_is_accepted_then_the_flow_errs(
        cloud: Cloud, tmp_path) -> None:
    """An instance in a planned operation in Nova (task_state migrating):
    real Masakari accepts the notification (it checks the host, not the
    instance), so nfvha's delivery is done; its engine's os-stop gets Nova's
    409, and the notification ends `error` with the VM left alone."""
    host, vm = _host(), str(uuid.uuid4())
    nova = NovaStandin(compute_hosts={host})
    nova.task_states[vm] = "migrating"
    await nova.start(port=cloud.ks.nova_port)
    try:
        await cloud.register(host)
        [d] = await _deliver(cloud, tmp_path, fault(host=host, instance_uuid=vm))
        assert d["status"] == "delivered", d
        n = await cloud.wait_status(_note_uuid(d), {"finished", "error", "failed",
                                                    "ignored"})
    finally:
        await nova.stop()
    assert n.status == "error", n
    assert nova.actions == [] and nova.states.get(vm, "active") == "active"
    refused = [r for r in nova.attempts if r.path.endswith("/action")]
    assert refused and all(r.body == {"os-stop": None} for r in refused)
