"""[api] auth_strategy = keystone: requests that change state need a token
Keystone validates (GET /v3/auth/tokens, against the Keystone stand-in)
holding one of [api] admin_roles; reads stay open unless protect_reads.
Keystone's answers are cached, refused tokens briefly too, and a Keystone
that cannot answer gives 503, never a pass."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from nfvha.controller.api import make_app
from nfvha.controller.apiauth import KeystoneTokens, protect
from nfvha.controller.reporters._openstack import connect
from nfvha.controller.service import Controller
from nfvha.standins.keystone import KeystoneStandin

USERS = {"nfvha": "service-secret", "operator": "op-secret", "viewer": "v-secret"}
GROUP = {"name": "g", "members": []}


async def _login(ks: KeystoneStandin, user: str) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.post(ks.url + "/v3/auth/tokens", json={"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "password": USERS[user], "domain": {"name": "Default"}}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
        assert r.status_code == 201, r.text
        return r.headers["x-subject-token"]


def _tokens(ks: KeystoneStandin, **kw: Any) -> KeystoneTokens:
    return KeystoneTokens(lambda: connect(
        auth_url=ks.url, username="nfvha", password=USERS["nfvha"], project_name="admin",
        user_domain_name="Default", project_domain_name="Default"), ["admin"], **kw)


@pytest.fixture
async def world(tmp_path: Path):
    ks = KeystoneStandin(USERS, {}, roles={"viewer": ["reader"]})
    await ks.start()
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await c.start()
    yield ks, c
    await c.stop()
    await ks.stop()


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nfvha")


async def test_changes_need_a_valid_token_with_an_admin_role(world) -> None:
    ks, c = world
    app = make_app(c)
    tokens = _tokens(ks)
    protect(app, tokens)
    operator, viewer = await _login(ks, "operator"), await _login(ks, "viewer")
    async with _client(app) as http:
        r = await http.put("/v1/server-groups/g1", json=GROUP)
        assert r.status_code == 401 and "X-Auth-Token required" in r.text
        assert r.headers["www-authenticate"].startswith("Keystone")
        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": "not-a-token"})
        assert r.status_code == 401 and "not valid" in r.text
        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": viewer})
        assert r.status_code == 403 and "admin" in r.text
        r = await http.delete("/v1/hosts/nowhere", headers={"X-Auth-Token": "x" * 9000})
        assert r.status_code == 401 and "too long" in r.text
        assert (await http.get("/v1/server-groups")).json() == []   # nothing changed

        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": operator})
        assert r.status_code == 200, r.text
        # reads stay open: the dashboard, nfvha status, monitoring
        for path in ("/v1/instances", "/v1/events", "/v1/hosts", "/v1/server-groups",
                     "/healthz", "/metrics", "/dashboard"):
            assert (await http.get(path)).status_code == 200, path

        # Keystone was asked once per token: answers are remembered, refusals too
        before = tokens.validations
        for _ in range(3):
            await http.delete("/v1/server-groups/nope", headers={"X-Auth-Token": operator})
            await http.delete("/v1/server-groups/nope", headers={"X-Auth-Token": "not-a-token"})
        assert tokens.validations == before
    # Keystone checked each token with nfvha's own service token
    checks = [r for r in ks.received if r.method == "GET" and r.path == "/v3/auth/tokens"]
    assert {r.headers["x-subject-token"] for r in checks} == {operator, viewer}
    assert all(r.headers["x-auth-token"] in ks.tokens for r in checks)


async def test_a_revoked_token_is_refused_once_the_cache_lets_go(world) -> None:
    ks, c = world
    app = make_app(c)
    protect(app, _tokens(ks, cache_s=0))
    operator = await _login(ks, "operator")
    async with _client(app) as http:
        ok = await http.put("/v1/server-groups/g1", json=GROUP,
                            headers={"X-Auth-Token": operator})
        assert ok.status_code == 200
        ks.revoke(operator)
        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": operator})
        assert r.status_code == 401


async def test_protect_reads_guards_v1_reads_but_not_health_or_metrics(world) -> None:
    ks, c = world
    app = make_app(c)
    protect(app, _tokens(ks), protect_reads=True)
    operator = await _login(ks, "operator")
    async with _client(app) as http:
        assert (await http.get("/v1/instances")).status_code == 401
        assert (await http.get("/v1/instances",
                               headers={"X-Auth-Token": operator})).status_code == 200
        for path in ("/healthz", "/metrics", "/dashboard"):
            assert (await http.get(path)).status_code == 200, path


async def test_keystone_unreachable_is_503_never_a_pass(world) -> None:
    ks, c = world
    app = make_app(c)
    protect(app, _tokens(ks))
    operator = await _login(ks, "operator")
    await ks.stop()
    async with _client(app) as http:
        r = await http.put("/v1/server-groups/g1", json=GROUP,
                           headers={"X-Auth-Token": operator})
        assert r.status_code == 503 and "cannot validate" in r.text
    assert (await c.list_hosts()) == []


async def test_the_controller_service_applies_the_configured_strategy(tmp_path: Path) -> None:
    """`nfvha controller` with [api] auth_strategy = keystone refuses a change
    without a token (before Keystone is even asked)."""
    from oslo_config import cfg

    import nfvha.conf
    from nfvha.cli.services import Stack, start_api

    conf = cfg.ConfigOpts()
    nfvha.conf.register(conf)
    conf([], project="nfvha-test", default_config_files=[])
    conf.set_override("auth_strategy", "keystone", group="api")
    conf.set_override("keystone_cloud", "nowhere", group="api")
    stack = Stack()
    stack.controller = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await stack.controller.start()
    try:
        await start_api(stack, "127.0.0.1", 0, conf)
        async with httpx.AsyncClient(base_url=stack.api_url) as http:
            r = await http.delete("/v1/hosts/h1")
            assert r.status_code == 401
            # a token, but no cloud "nowhere" to check it with: 503, no crash
            r = await http.delete("/v1/hosts/h1", headers={"X-Auth-Token": "t"})
            assert r.status_code == 503 and "cannot validate" in r.text, r.text
            assert (await http.get("/v1/hosts")).status_code == 200
        conf.set_override("keystone_cloud", None, group="api")
        with pytest.raises(SystemExit, match="keystone_cloud"):
            await start_api(Stack(controller=stack.controller), "127.0.0.1", 0, conf)
    finally:
        await stack.stop()
