"""Screenshot of the controller dashboard (docs/dashboard.png) with a few
sample instances: a real controller and API in this process, a real
headless Chromium.

    .venv/bin/python scripts/dashboard_screenshot.py [OUT.png]
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from nfvha.controller.api import ApiServer, make_app
from nfvha.controller.reporters.log import LogReporter
from nfvha.controller.service import Controller


def _vm(name: str, state: str, health: str | None, action: str) -> dict[str, object]:
    return {"uuid": str(uuid.uuid4()), "name": name, "state": state, "health": health,
            "interval_ms": 1000, "corrective_action": action}


async def main(out: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        c = Controller(f"sqlite:///{tmp}/c.db", [LogReporter()], agent_down_after_s=0.5)
        await c.start()
        api = ApiServer(make_app(c))
        port = await api.start()
        lost = _vm("vnf-lb-2", "failed", None, "reboot")
        await c.hello("compute-0", [_vm("vnf-lb-1", "enabled", "healthy", "reboot"),
                                    _vm("vnf-db-1", "enabled", "unhealthy", "log")])
        await c.hello("compute-1", [lost])

        async def talk() -> None:      # compute-0's agent reports, compute-1's is silent
            while True:
                await c.alive("compute-0")
                await asyncio.sleep(0.1)

        talker = asyncio.create_task(talk())
        await c.fault({"id": str(uuid.uuid4()), "instance_uuid": lost["uuid"],
                       "host": "compute-1", "kind": "heartbeat_loss",
                       "corrective_action": "reboot", "detail": "2 challenges unanswered",
                       "detected_at": datetime.now(timezone.utc).isoformat()})
        await c.wait_idle(5)
        await asyncio.sleep(1)
        shot = await asyncio.create_subprocess_exec(
            "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            f"--user-data-dir={tmp}/profile", "--window-size=1300,700",
            "--virtual-time-budget=3000", f"--screenshot={out.resolve()}",
            f"http://127.0.0.1:{port}/dashboard")
        rc = await shot.wait()
        talker.cancel()
        await api.stop()
        await c.stop()
    print(f"{out}: {out.stat().st_size} bytes" if rc == 0 else f"chromium failed ({rc})")
    return rc


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png"))))
