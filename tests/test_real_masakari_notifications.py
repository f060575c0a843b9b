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
            conn = self.ks.admin()
            try:
                return fn(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

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
def cloud(real_masakari) -> Cloud:
    return Cloud(real_masakari.keystone)


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
