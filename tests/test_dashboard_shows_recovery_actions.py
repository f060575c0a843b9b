"""The dashboard's fault table shows what recovery did about each fault
(status, action, time to the heartbeat back; the reason as a tooltip), read
in a real headless Chromium against a real controller with the recovery
sink. An operator's (or guest's) text stays text."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

from conftest import require_command
from recovery_helpers import Rig, fault
from test_dashboard_in_headless_chromium import _dump_dom, _row

from nfvha.controller.api import ApiServer, make_app
from nfvha.controller.recovery.policy import Policy

HOSTILE = '<img src=x onerror="document.title=\'owned\'">CHG-7'


async def test_each_fault_shows_its_recovery_action(tmp_path: Path) -> None:
    require_command("chromium")
    rig = Rig(f"sqlite:///{tmp_path}/c.sqlite", Policy(max_actions=3, window_s=3600,
                                                       min_uptime_s=0))
    await rig.start()
    api = ApiServer(make_app(rig.c))
    port = await api.start()
    try:
        vm, paused_vm = str(uuid.uuid4()), str(uuid.uuid4())
        acted = await rig.fault_and_wait(fault(vm, detected_ago_s=4))
        await rig.back(vm)
        await rig.c._db(rig.c.store.set_recovery_paused, paused_vm, True, HOSTILE)
        paused = await rig.fault_and_wait(fault(paused_vm))
        nothing = await rig.fault_and_wait(fault(vm, action="none"))
        ms = (await rig.c.get_event(acted["id"]))["action"]["recovery_ms"]

        dom = await _dump_dom(f"http://127.0.0.1:{port}/dashboard", tmp_path / "profile")
        assert "controller unreachable" not in dom
        row = _row(dom, "event", acted["id"])
        assert 'data-action="succeeded"' in row and "state-succeeded" in row
        assert f"reset {ms / 1000:.1f} s" in row
        row = _row(dom, "event", paused["id"])
        assert "state-skipped" in row and "CHG-7" in row           # the reason as tooltip
        # attribute values aside, no element was made of the text
        assert "<img" not in re.sub(r'"[^"]*"', '""', row)
        assert "<title>nfvha controller</title>" in dom
        assert "state-skipped" in _row(dom, "event", nothing["id"])
        assert "<th>recovery</th>" in dom
    finally:
        await api.stop()
        await rig.stop()
