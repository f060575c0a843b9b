"""[api] auth_strategy = keystone against the real Keystone (PyPI, SQL
backend on MariaDB, fernet tokens): nfvha asks Keystone's "Validate and
show information for token" with its own service user's token, and lets a
change through only for a token Keystone vouches for that holds an admin
role. Each test says what it checks on the real service."""
from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from nfvha.controller.api import make_app
from nfvha.controller.apiauth import KeystoneTokens, protect
from nfvha.controller.reporters._openstack import connect
from nfvha.controller.service import Controller

pytestmark = [pytest.mark.system, pytest.mark.slow]
GROUP = {"name": "g", "members": []}


class Users:
    """nfvha's service user (role service, which Keystone's default policy
    needs to validate others' tokens), an operator (admin on project admin),
    a viewer (reader) and a user with no right to validate tokens."""

    def __init__(self, ks: Any) -> None:
        self.ks = ks
        tag = secrets.token_hex(3)
        self.pw = {n: secrets.token_urlsafe(10) for n in ("svc", "operator", "viewer", "weak")}
        self.name = {n: f"{n}-{tag}" for n in self.pw}
        ks.add_user(self.name["svc"], self.pw["svc"], ["service"])
        ks.add_user(self.name["operator"], self.pw["operator"], ["admin"], project="admin")
        ks.add_user(self.name["viewer"], self.pw["viewer"], ["reader"], project="admin")
        ks.add_user(self.name["weak"], self.pw["weak"], ["member"])

    def tokens(self, user: str = "svc", **kw: Any) -> KeystoneTokens:
        project = "service" if user in ("svc", "weak") else "admin"
        return KeystoneTokens(lambda: connect(
            auth_url=self.ks.url, username=self.name[user], password=self.pw[user],
            project_name=project, user_domain_name="Default",
            project_domain_name="Default"), ["admin"], **kw)

    async def login(self, user: str) -> str:
        return await _token(self.ks, {"methods": ["password"], "password": {"user": {
            "name": self.name[user], "password": self.pw[user],
            "domain": {"name": "Default"}}}}, {"project": {
                "name": "admin", "domain": {"name": "Default"}}})


async def _token(ks: Any, identity: dict, scope: dict | None = None) -> str:
    body: dict[str, Any] = {"auth": {"identity": identity}}
    if scope:
        body["auth"]["scope"] = scope
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(ks.url + "/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.headers["x-subject-token"]


@pytest.fixture(scope="module")
def users(real_keystone) -> Users:
    return Users(real_keystone)


@pytest.fixture
async def controller(tmp_path: Path):
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await c.start()
    yield c
    await c.stop()


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nfvha")


async def test_admin_passes_reader_is_403_garbage_is_401(users: Users, controller) -> None:
    """Real Keystone validates the operator's fernet token (admin role) for
    nfvha's service user: the change goes through; the viewer's token is
    valid but holds only reader: 403; a made-up token Keystone does not
    know: 401. Each token is asked once; repeats come from nfvha's cache."""
    app = make_app(controller)
    tokens = users.tokens()
    protect(app, tokens)
    operator, viewer = await users.login("operator"), await users.login("viewer")
    async with _client(app) as http:
        assert (await http.put("/v1/server-groups/g1", json=GROUP)).status_code == 401
        bogus = "gAAAAAB" + secrets.token_urlsafe(150)
        r = await http.put("/v1/server-groups/g1", json=GROUP, headers={"X-Auth-Token": bogus})
        assert r.status_code == 401 and "not valid" in r.text, r.text
        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": viewer})
        assert r.status_code == 403 and "admin" in r.text, r.text
        assert (await http.get("/v1/server-groups")).json() == []
        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": operator})
        assert r.status_code == 200, r.text
        before = tokens.validations
        for _ in range(3):
            await http.delete("/v1/server-groups/nope", headers={"X-Auth-Token": operator})
        assert tokens.validations == before


async def test_a_revoked_token_is_refused(users: Users, controller) -> None:
    """The operator revokes its own token at the real Keystone (DELETE
    /v3/auth/tokens, a revocation event): nfvha, asking again (no cache),
    refuses it with 401."""
    app = make_app(controller)
    protect(app, users.tokens(cache_s=0))
    operator = await users.login("operator")
    async with _client(app) as http:
        ok = await http.put("/v1/server-groups/g1", json=GROUP,
                            headers={"X-Auth-Token": operator})
        assert ok.status_code == 200, ok.text
        async with httpx.AsyncClient(timeout=30) as ks:
            r = await ks.delete(users.ks.url + "/auth/tokens", headers={
                "X-Auth-Token": operator, "X-Subject-Token": operator})
            assert r.status_code == 204, r.text
        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": operator})
        assert r.status_code == 401, r.text


async def test_an_expired_token_is_refused_even_from_the_cache(users: Users,
                                                               controller) -> None:
    """A token whose expiry comes early (issued for an application
    credential that expires in a few seconds: Keystone caps the token's
    expires_at there): accepted before, refused (401) after, although
    nfvha's cache would keep an answer for 60 s: the cache never outlives
    the token's expires_at as Keystone states it."""
    app = make_app(controller)
    tokens = users.tokens(cache_s=60)
    protect(app, tokens)
    operator = await users.login("operator")
    async with httpx.AsyncClient(timeout=30) as ks:
        me = (await ks.get(users.ks.url + "/auth/tokens", headers={
            "X-Auth-Token": operator, "X-Subject-Token": operator})).json()["token"]["user"]
        # room for three Keystone calls on a loaded machine before it expires
        expires = datetime.now(timezone.utc) + timedelta(seconds=10)
        r = await ks.post(f"{users.ks.url}/users/{me['id']}/application_credentials",
                          headers={"X-Auth-Token": operator},
                          json={"application_credential": {
                              "name": f"short-{secrets.token_hex(3)}",
                              "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%f")}})
        assert r.status_code == 201, r.text
        cred = r.json()["application_credential"]
    short = await _token(users.ks, {"methods": ["application_credential"],
                                    "application_credential": {"id": cred["id"],
                                                               "secret": cred["secret"]}})
    async with _client(app) as http:
        r = await http.put("/v1/server-groups/g1", json=GROUP, headers={"X-Auth-Token": short})
        assert r.status_code == 200, r.text
        asked = tokens.validations
        await asyncio.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds())
                            + 1.5)
        r = await http.put("/v1/server-groups/g1", json=GROUP, headers={"X-Auth-Token": short})
        assert r.status_code == 401, r.text
        assert tokens.validations == asked + 1   # asked Keystone again, not the cache


async def test_a_service_user_keystone_will_not_answer_is_503(users: Users,
                                                              controller) -> None:
    """nfvha's own user without the service (or admin) role: the real
    Keystone's default policy refuses it the validation (403), so nfvha
    cannot tell a good token from a bad one: 503, never a pass. (The
    stand-in let anyone validate; the real one does not.)"""
    app = make_app(controller)
    protect(app, users.tokens("weak"))
    operator = await users.login("operator")
    async with _client(app) as http:
        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": operator})
        assert r.status_code == 503 and "Keystone answered 403" in r.text, r.text
        assert (await http.get("/v1/server-groups")).json() == []


async def test_keystone_down_is_503_and_back_is_served(users: Users, controller) -> None:
    """The real Keystone stopped (its WSGI server gone, connection
    refused): a token nfvha has not seen gets 503, never a pass; with
    Keystone started again on the same database and keys, the same token is
    validated and the change goes through."""
    app = make_app(controller)
    protect(app, users.tokens(cache_s=0))
    first, second = await users.login("operator"), await users.login("operator")
    async with _client(app) as http:
        ok = await http.put("/v1/server-groups/g1", json=GROUP, headers={"X-Auth-Token": first})
        assert ok.status_code == 200, ok.text
        await asyncio.to_thread(users.ks.stop)
        try:
            r = await http.put("/v1/server-groups/g2", json=GROUP,
                               headers={"X-Auth-Token": second})
            assert r.status_code == 503 and "cannot validate" in r.text, r.text
        finally:
            await asyncio.to_thread(users.ks.start)
        r = await http.put("/v1/server-groups/g2", json=GROUP,
                           headers={"X-Auth-Token": second})
        assert r.status_code == 200, r.text


async def test_protect_reads_guards_v1_reads_but_not_health_or_metrics(users: Users,
                                                                        controller) -> None:
    """[api] protect_reads: a read of /v1 needs a token the real Keystone
    validates; health, metrics and the dashboard page itself stay open."""
    app = make_app(controller)
    protect(app, users.tokens(), protect_reads=True)
    operator = await users.login("operator")
    async with _client(app) as http:
        assert (await http.get("/v1/instances")).status_code == 401
        assert (await http.get("/v1/instances",
                               headers={"X-Auth-Token": operator})).status_code == 200
        for path in ("/healthz", "/metrics", "/dashboard"):
            assert (await http.get(path)).status_code == 200, path
