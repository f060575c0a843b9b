"""GET /dashboard: one page that shows hosts, instances (problems first),
fault events with their deliveries and server groups, read in a real
headless Chromium against a real controller. Guest-supplied text shows as
text, never as markup."""
from __future__ import annotations

import asyncio
import html
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
from conftest import CHROMIUM_FLAGS, require_command

from nfvha.controller.api import ApiServer, make_app
from nfvha.controller.reporters.log import LogReporter
from nfvha.controller.service import Controller

HOSTILE = '<img src=x onerror="document.title=\'owned\'">web-2'


def _record(uuid_: str, name: str, state: str, health: str | None) -> dict[str, Any]:
    return {"uuid": uuid_, "name": name, "state": state, "health": health,
            "interval_ms": 1000, "corrective_action": "reboot"}


async def _dump_dom(url: str, profile: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
        "--virtual-time-budget=4000", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


def _row(dom: str, attr: str, value: str) -> str:
    m = re.search(rf'<tr[^>]*data-{attr}="{re.escape(value)}"[^>]*>.*?</tr>', dom, re.S)
    assert m, f"no row with data-{attr}={value}"
    return m.group(0)


async def test_the_dashboard_shows_the_controllers_state_and_escapes_guest_text(
        tmp_path: Path) -> None:
    require_command("chromium")
    # cmp-ok talks every 0.1 s; 1.5 s of quiet leaves room for a loaded machine
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [LogReporter()], agent_down_after_s=1.5)
    await c.start()
    api = ApiServer(make_app(c))
    port = await api.start()
    talker = None
    try:
        ok_vm, bad_vm = str(uuid.uuid4()), str(uuid.uuid4())
        await c.hello("cmp-ok", [_record(ok_vm, "web-1", "enabled", "healthy")])
        await c.hello("cmp-quiet", [_record(bad_vm, HOSTILE, "failed", None)])

        async def keep_talking() -> None:
            while True:
                await c.alive("cmp-ok")
                await asyncio.sleep(0.1)

        talker = asyncio.create_task(keep_talking())
        ev = await c.fault({"id": str(uuid.uuid4()), "instance_uuid": bad_vm,
                            "host": "cmp-quiet", "kind": "heartbeat_loss",
                            "corrective_action": "reboot", "detail": "<b>2 missed</b>",
                            "detected_at": "2026-11-24T09:00:00.000000+00:00"})
        await c.wait_idle(5)
        while c.hosts is not None and c.hosts.state("cmp-quiet") != "silent":
            await asyncio.sleep(0.05)

        dom = await _dump_dom(f"http://127.0.0.1:{port}/dashboard", tmp_path / "profile")
        assert "controller unreachable" not in dom
        assert re.search(r'id="status" class="status">updated ', dom), dom[:2000]
        good = _row(dom, "uuid", ok_vm)
        assert "state-enabled" in good and "web-1" in good and "problem" not in good
        bad = _row(dom, "uuid", bad_vm)
        assert 'class="problem"' in bad and "state-failed" in bad and "state-silent" in bad
        assert dom.index(bad_vm) < dom.index(ok_vm)                  # problems first
        assert html.escape(HOSTILE, quote=False) in bad              # shown as text...
        assert "<img" not in dom and "owned" not in re.sub(r"&lt;img.*?web-2", "", dom)
        assert "state-silent" in _row(dom, "host", "cmp-quiet")
        assert "state-up" in _row(dom, "host", "cmp-ok")
        event = _row(dom, "event", ev["id"])
        assert "heartbeat_loss" in event and "&lt;b&gt;2 missed&lt;/b&gt;" in event
        assert re.search(r'data-sink="log".*?state-delivered.*?×1', event, re.S)
        failed_card = re.search(r'<div class="card bad" data-card="failed"><b>1</b>', dom)
        assert failed_card, re.findall(r'<div class="card[^"]*" data-card="[^"]*"><b>\d+</b>',
                                       dom)
        assert '<div class="card" data-card="heartbeating"><b>1</b>' in dom
        assert "no server groups" in dom
    finally:
        if talker is not None:
            talker.cancel()
        await api.stop()
        await c.stop()


async def test_the_dashboard_says_so_when_the_controller_is_gone(tmp_path: Path) -> None:
    require_command("chromium")
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await c.start()
    api = ApiServer(make_app(c))
    port = await api.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            page = (await http.get("/dashboard")).text
            js = (await http.get("/dashboard/dashboard.js")).text
            css = (await http.get("/dashboard/dashboard.css")).text
    finally:
        await api.stop()
        await c.stop()
    # the same files served from disk by a server with no API behind them
    site = tmp_path / "site"
    (site / "dashboard").mkdir(parents=True)
    (site / "dashboard.html").write_text(page)
    (site / "dashboard" / "dashboard.js").write_text(js)
    (site / "dashboard" / "dashboard.css").write_text(css)
    server = await asyncio.create_subprocess_exec(
        "python3", "-m", "http.server", "--bind", "127.0.0.1", "0", cwd=site,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert server.stdout is not None
        line = (await asyncio.wait_for(server.stdout.readline(), 10)).decode()
        port = int(re.search(r"port (\d+)", line).group(1))
        dom = await _dump_dom(f"http://127.0.0.1:{port}/dashboard.html", tmp_path / "p2")
        # whichever of the four reads failed first is named
        status = re.findall(r'<span id="status"[^<]*</span>', dom)
        assert re.search(r'class="status error">controller unreachable: '
                         r'/v1/[a-z-]+(\?limit=\d+)?: HTTP 404 \(retrying\)<', dom), status
    finally:
        server.terminate()
        await server.wait()


async def test_the_dashboard_is_served_with_a_strict_content_security_policy(
        tmp_path: Path) -> None:
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(c)),
                                 base_url="http://nfvha") as http:
        r = await http.get("/")
        assert r.status_code in (302, 307) and r.headers["location"] == "/dashboard"
        r = await http.get("/dashboard")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "<script" in r.text and "<script>" not in r.text       # no inline script
        r = await http.get("/dashboard/dashboard.js")
        assert r.headers["content-type"].startswith("text/javascript")
        for missing in ("/dashboard/nope.js", "/dashboard/..%2Fservice.py",
                        "/dashboard/dashboard.html"):
            assert (await http.get(missing)).status_code == 404, missing
        assert "/dashboard" not in (await http.get("/openapi.json")).text
