"""`nfvha status` / `nfvha events`: read the controller's REST API."""
from __future__ import annotations

import json
import os

import httpx


def show(what: str, api: str, as_json: bool) -> int:
    base = api if api.startswith("http") else f"http://{api}"
    path = "/v1/instances" if what == "status" else "/v1/events"
    try:
        # a Keystone token, for a controller with [api] protect_reads
        token = os.environ.get("OS_TOKEN") or os.environ.get("OS_AUTH_TOKEN")
        resp = httpx.get(base + path, timeout=5,
                         headers={"X-Auth-Token": token} if token else None)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        print(f"nfvha: cannot read {base}{path}: {exc}")
        return 1
    items = resp.json()
    if as_json:
        print(json.dumps(items, indent=2))
        return 0
    if what == "status":
        # "agent silent": the state shown is the last one heard; nobody
        # heartbeats that guest until its compute agent is back
        print(f"{'instance':36}  {'host':16} {'agent':7} {'state':9} {'health':9} interval")
        for it in items:
            hb = it.get("heartbeat") or {}
            print(f"{it['uuid']:36}  {str(it.get('host'))[:16]:16} "
                  f"{it.get('host_state', '?')!s:7} {hb.get('state')!s:9} "
                  f"{hb.get('health')!s:9} {hb.get('interval_ms')} ms")
    else:
        print(f"{'detected_at':27} {'instance':36} {'kind':18} {'action':28} deliveries")
        for ev in items:
            dl = ", ".join(f"{d['sink']}:{d['status']}/{d['attempts']}"
                           for d in ev.get("deliveries", []))
            print(f"{ev['detected_at']:27} {ev['instance_uuid']:36} {ev['kind']:18} "
                  f"{_action(ev.get('action')):28} {dl}")
    return 0


def _action(act: dict | None) -> str:
    """The recovery action of an event: status, action, recovery time."""
    if not act:
        return "-"
    text = f"{act.get('status')} {act.get('action') or ''}".strip()
    if act.get("recovery_ms") is not None:
        text += f" {act['recovery_ms']} ms"
    return text
