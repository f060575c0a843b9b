"""[api] auth_strategy = keystone as the controller service applies it from
its configuration (no Keystone needed: a change without a token is refused
before Keystone is asked, an unknown cloud is a 503, a missing one stops the
start). What Keystone itself answers is checked against the real Keystone in
tests/test_real_keystone_*.py."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from nfvha.controller.service import Controller


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
