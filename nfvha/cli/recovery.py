"""`nfvha recovery pause|resume|rearm|show UUID`: an instance's recovery
(loop protection) through the controller's REST API. The changes need a
Keystone token when the controller asks for one: OS_TOKEN or OS_AUTH_TOKEN."""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import httpx


def _show(r: dict[str, Any]) -> str:
    lines = [f"instance      {r['instance_uuid']}", f"mode          {r.get('mode')}",
             f"paused        {'yes' if r['paused'] else 'no'}"
             + (f" ({r['paused_reason']})" if r.get("paused_reason") else ""),
             f"exhausted     {'yes, since ' + str(r['exhausted_at']) if r['exhausted'] else 'no'}",
             f"actions       {len(r['action_times'])} counted"
             + (f", last {r['action_times'][-1]}" if r["action_times"] else "")]
    return "\n".join(lines)


def recovery(op: str, uuid: str, api: str, reason: Optional[str] = None,
             as_json: bool = False) -> int:
    base = api if api.startswith("http") else f"http://{api}"
    path = f"/v1/instances/{uuid}/recovery"
    token = os.environ.get("OS_TOKEN") or os.environ.get("OS_AUTH_TOKEN")
    headers = {"X-Auth-Token": token} if token else None
    try:
        if op == "show":
            resp = httpx.get(base + path, timeout=5, headers=headers)
        elif op == "rearm":
            resp = httpx.post(base + path + "/rearm", timeout=5, headers=headers)
        else:
            resp = httpx.post(base + path, timeout=5, headers=headers,
                              json={"paused": op == "pause", "reason": reason or ""})
    except httpx.HTTPError as exc:
        print(f"nfvha: cannot reach {base}: {exc}")
        return 1
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text[:200]
        print(f"nfvha: {op} {uuid}: HTTP {resp.status_code}: {detail}")
        return 1
    body = resp.json()
    print(json.dumps(body, indent=2) if as_json else _show(body))
    return 0
