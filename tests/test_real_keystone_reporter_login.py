"""The OpenStack sinks' way into a real cloud, against the real Keystone:
password login of nfvha's service user, the endpoint found in Keystone's
service catalog, the token sent along. Each test says what it checks on
the real service."""
from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest

from nfvha.controller import Controller
from nfvha.controller.reporters._openstack import connect
from nfvha.controller.reporters.nova import NovaReporter
from nfvha.standins.nova import NovaStandin
from tests.test_controller_helpers import fault

pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.fixture(scope="module")
def service_user(real_keystone) -> tuple[str, str]:
    name, password = f"nfvha-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    real_keystone.add_user(name, password, ["admin"])
    return name, password


def _conn(ks, name: str, password: str):
    return lambda: connect(auth_url=ks.url, username=name, password=password,
                           project_name="service", user_domain_name="Default",
                           project_domain_name="Default", region_name="RegionOne")


async def test_login_catalog_and_a_token_keystone_vouches_for(real_keystone, service_user,
                                                              tmp_path) -> None:
    """The Nova sink logs in at the real Keystone with nfvha's service user,
    takes the "compute" endpoint from the catalog Keystone returns (the
    Nova stand-in's address, registered as an operator registers Nova), and
    sends os-resetState with a token that the real Keystone, asked
    afterwards, says belongs to that user."""
    name, password = service_user
    nova = NovaStandin()
    await nova.start(port=real_keystone.nova_port)
    try:
        c = Controller(f"sqlite:///{tmp_path}/k.sqlite",
                       [NovaReporter(_conn(real_keystone, name, password))])
        await c.start()
        try:
            ev = fault()
            await c.fault(ev)
            await c.wait_idle(60)
            [d] = (await c.get_event(ev["id"]))["deliveries"]
        finally:
            await c.stop()
    finally:
        await nova.stop()
    assert d["status"] == "delivered", d
    [reset] = nova.received
    assert reset.path == f"/v2.1/servers/{ev['instance_uuid']}/action"
    assert reset.body == {"os-resetState": {"state": "error"}}
    token = reset.headers["x-auth-token"]
    admin = await asyncio.to_thread(real_keystone.admin)
    try:
        r = await asyncio.to_thread(lambda: admin.session.get(
            real_keystone.url + "/auth/tokens", headers={"X-Subject-Token": token},
            raise_exc=False))
    finally:
        await asyncio.to_thread(admin.close)
    assert r.status_code == 200, r.text
    info = r.json()["token"]
    assert info["user"]["name"] == name and info["project"]["name"] == "service"
    [compute] = [s for s in info["catalog"] if s["type"] == "compute"]
    assert {e["url"] for e in compute["endpoints"]} == {real_keystone.nova_url}


async def test_a_wrong_password_is_retried_and_nothing_is_sent(real_keystone, service_user,
                                                               tmp_path) -> None:
    """The real Keystone refuses the login (401): the delivery stays
    pending and is retried (the password may be fixed, Keystone may be
    mid-change), with Keystone's answer as the error; Nova hears nothing."""
    name, _ = service_user
    nova = NovaStandin()
    await nova.start(port=real_keystone.nova_port)
    try:
        c = Controller(f"sqlite:///{tmp_path}/w.sqlite",
                       [NovaReporter(_conn(real_keystone, name, "wrong"))],
                       retry_base_s=0.05, retry_max_s=0.2)
        await c.start()
        try:
            ev = fault()
            await c.fault(ev)
            for _ in range(600):
                d = (await c.get_event(ev["id"]))["deliveries"][0]
                if d["attempts"] >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await c.stop()
    finally:
        await nova.stop()
    assert d["status"] == "pending" and d["attempts"] >= 2, d
    assert "401" in d["last_error"] or "Unauthorized" in d["last_error"], d
    assert nova.attempts == []
    # the real Keystone said so itself: the same login, asked directly
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(real_keystone.url + "/auth/tokens", json={"auth": {"identity": {
            "methods": ["password"], "password": {"user": {
                "name": name, "password": "wrong", "domain": {"name": "Default"}}}}}})
    assert r.status_code == 401
