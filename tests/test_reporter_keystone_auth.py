"""The Masakari and Nova reporters the way a real cloud is reached: password
login at Keystone, endpoints from the service catalog, the token sent along."""
from __future__ import annotations

import asyncio

from nfvha.controller import Controller
from nfvha.controller.reporters._openstack import connect
from nfvha.controller.reporters.masakari import MasakariReporter
from nfvha.controller.reporters.nova import NovaReporter
from nfvha.standins.keystone import KeystoneStandin
from nfvha.standins.masakari import MasakariStandin
from nfvha.standins.nova import NovaStandin
from tests.test_controller_helpers import fault


async def test_password_login_catalog_and_token(tmp_path):
    async with MasakariStandin() as m, NovaStandin() as n:
        ks = KeystoneStandin({"nfvha": "s3cret"},
                             {"instance-ha": m.url + "/v1", "compute": n.url + "/v2.1"})
        async with ks:
            def conn():
                return connect(auth_url=ks.url, username="nfvha", password="s3cret",
                               project_name="admin", user_domain_name="Default",
                               project_domain_name="Default", region_name="RegionOne")

            c = Controller(f"sqlite:///{tmp_path}/k.sqlite",
                           [MasakariReporter(conn), NovaReporter(conn)])
            await c.start()
            try:
                ev = fault()
                await c.fault(ev)
                await c.wait_idle(30)
                stored = await c.get_event(ev["id"])
            finally:
                await c.stop()
    assert {d["sink"]: d["status"] for d in stored["deliveries"]} == {
        "masakari": "delivered", "nova": "delivered"}
    [login] = [r for r in ks.received if r.path == "/v3/auth/tokens"][:1]
    assert login.body["auth"]["identity"]["password"]["user"]["name"] == "nfvha"
    [notif] = m.received
    [reset] = n.received
    assert notif.headers["x-auth-token"] in ks.tokens
    assert reset.headers["x-auth-token"] in ks.tokens
    assert notif.body["notification"]["payload"]["instance_uuid"] == ev["instance_uuid"]
    assert reset.path == f"/v2.1/servers/{ev['instance_uuid']}/action"


async def test_wrong_password_is_retried_not_lost(tmp_path):
    async with MasakariStandin() as m:
        async with KeystoneStandin({"nfvha": "right"}, {"instance-ha": m.url + "/v1"}) as ks:
            def conn():
                return connect(auth_url=ks.url, username="nfvha", password="wrong",
                               project_name="admin", user_domain_name="Default",
                               project_domain_name="Default")

            c = Controller(f"sqlite:///{tmp_path}/w.sqlite", [MasakariReporter(conn)],
                           retry_base_s=0.02, retry_max_s=0.05)
            await c.start()
            try:
                ev = fault()
                await c.fault(ev)
                for _ in range(300):
                    stored = await c.get_event(ev["id"])
                    if stored["deliveries"][0]["attempts"] >= 2:
                        break
                    await asyncio.sleep(0.01)
            finally:
                await c.stop()
    d = stored["deliveries"][0]
    assert d["status"] == "pending" and d["attempts"] >= 2
    assert "401" in d["last_error"] or "Unauthorized" in d["last_error"]
    assert m.attempts == []
