"""The dashboard's token flow against the real Keystone: with [api]
protect_reads the page says a token is needed and offers the form; a token
Keystone issued to an operator (admin role), handed over as #token= (kept in
the tab's sessionStorage, never echoed into the page), reads; a reader's
token is told it may not. Keystone validates every token for real."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from conftest import require_command
from test_dashboard_in_headless_chromium import _dump_dom, _record, _row
from test_real_keystone_token_checks import Users

from nfvha.controller.api import ApiServer, make_app
from nfvha.controller.apiauth import protect
from nfvha.controller.service import Controller

pytestmark = [pytest.mark.system, pytest.mark.slow]


async def test_protected_dashboard_asks_keystone_for_a_token_and_reads_with_it(
        real_keystone, tmp_path: Path) -> None:
    require_command("chromium")
    users = Users(real_keystone)
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await c.start()
    app = make_app(c)
    protect(app, users.tokens(), protect_reads=True)
    api = ApiServer(app)
    port = await api.start()
    try:
        vm = str(uuid.uuid4())
        await c.hello("cmp-1", [_record(vm, "web-1", "enabled", "healthy")])
        operator, viewer = await users.login("operator"), await users.login("viewer")
        url = f"http://127.0.0.1:{port}/dashboard"

        dom = await _dump_dom(url, tmp_path / "p1")
        assert re.search(r'class="status error">a Keystone token is needed: /v1/[a-z-]+'
                         r'(\?limit=\d+)?: HTTP 401 \(X-Auth-Token required\)<', dom), dom[:1500]
        assert '<form id="login">' in dom and '<button id="logout" type="button" hidden' in dom
        assert vm not in dom

        dom = await _dump_dom(f"{url}#token={operator}", tmp_path / "p2")
        assert re.search(r'id="status" class="status">updated ', dom), dom[:1500]
        assert "state-enabled" in _row(dom, "uuid", vm)
        assert '<form id="login" hidden' in dom and '<button id="logout" type="button">' in dom
        assert operator not in dom  # not echoed into the page

        dom = await _dump_dom(f"{url}#token={viewer}", tmp_path / "p3")
        assert re.search(r'class="status error">this token may not read: .*HTTP 403 '
                         r'\(token holds none of the roles', dom), dom[:1500]
        assert vm not in dom
    finally:
        await api.stop()
        await c.stop()
