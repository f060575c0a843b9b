"""`nfvha recovery pause|resume|rearm|show UUID` and `nfvha events` (its
action column) against a real controller's REST API, as separate
processes."""
from __future__ import annotations

import asyncio
import json
import sys
import uuid

from recovery_helpers import Rig, fault

from nfvha.controller.api import ApiServer, make_app
from nfvha.controller.recovery.policy import Policy


async def nfvha(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.cli.main", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode()


async def test_pause_resume_rearm_show_and_the_events_action_column(tmp_path) -> None:
    rig = Rig(f"sqlite:///{tmp_path}/c.sqlite", Policy(max_actions=1, window_s=3600,
                                                       min_uptime_s=0))
    await rig.start()
    api = ApiServer(make_app(rig.c))
    port = await api.start()
    where = f"127.0.0.1:{port}"
    try:
        vm = str(uuid.uuid4())
        first = await rig.fault_and_wait(fault(vm, detected_ago_s=2))
        await rig.back(vm)
        await rig.fault_and_wait(fault(vm))                      # exhausts
        rc, out = await nfvha("events", "--api", where)
        assert rc == 0, out
        line = next(x for x in out.splitlines() if x.startswith(first["detected_at"]))
        ms = (await rig.c.get_event(first["id"]))["action"]["recovery_ms"]
        assert f"succeeded reset {ms} ms" in line and "recovery:delivered/1" in line
        assert any("recovery_exhausted" in x and " - " in x for x in out.splitlines())

        rc, out = await nfvha("recovery", "show", vm, "--api", where)
        assert rc == 0 and "exhausted     yes, since" in out and "1 counted" in out, out
        rc, out = await nfvha("recovery", "rearm", vm, "--api", where)
        assert rc == 0 and "exhausted     no" in out and "0 counted" in out, out
        rc, out = await nfvha("recovery", "pause", vm, "--api", where, "--reason",
                              "disk swap")
        assert rc == 0 and "paused        yes (disk swap)" in out, out
        rc, out = await nfvha("recovery", "show", vm, "--api", where, "--json")
        assert rc == 0 and json.loads(out)["paused_reason"] == "disk swap"
        rc, out = await nfvha("recovery", "resume", vm, "--api", where)
        assert rc == 0 and "paused        no" in out, out
        rc, out = await nfvha("recovery", "show", str(uuid.uuid4()), "--api", where)
        assert rc == 1 and "HTTP 404" in out
    finally:
        await api.stop()
        await rig.stop()
    rc, out = await nfvha("recovery", "show", vm, "--api", where)   # nobody there
    assert rc == 1 and "cannot reach" in out
