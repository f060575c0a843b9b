"""The demo's last two steps, after the measured faults:

- a planned operation: Nova deletes a VM. Its compute emits
  ``instance.delete.start`` (handed to the controller here exactly as the
  Nova notification listener hands it on, in Nova's versioned format: no
  Nova runs in the demo), then the VM's channel closes. The compute agent
  detects ``channel_lost``; the controller stores it and tells no sink.
- the compute agent stops without a word (as after a crash): the controller
  flags its host silent after ``[heartbeat] agent_down_after_s``.

They come last because the first makes every later fault wait the
planned-operation grace, and after the second nothing is heartbeated.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable


def delete_start(instance_uuid: str, host: str) -> dict[str, Any]:
    """Nova's versioned ``instance.delete.start`` as a notification listener
    hands it on (the message inside oslo's messagingv2 envelope)."""
    return {"event_type": "instance.delete.start", "priority": "INFO",
            "publisher_id": f"nova-compute:{host}", "message_id": f"demo-{instance_uuid}",
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
            "payload": {"nova_object.name": "InstanceActionPayload",
                        "nova_object.namespace": "nova", "nova_object.version": "1.8",
                        "nova_object.data": {"uuid": instance_uuid, "host": host,
                                             "state": "active", "task_state": "deleting",
                                             "power_state": "running"}}}


async def planned_delete(controller: Any, instance_uuid: str, host: str,
                         cut: Callable[[], Awaitable[None]],
                         wait_fault: Callable[[float], Awaitable[float | None]],
                         reported: Callable[[float], bool]) -> dict[str, Any]:
    faults: dict[str, str] = {}           # event id -> instance
    outcome: dict[str, str] = {}          # sink -> status / note

    def listen(what: dict[str, Any]) -> None:
        if what["type"] == "fault" and what["event"]["instance_uuid"] == instance_uuid:
            faults[what["event"]["id"]] = instance_uuid
        elif what["type"] == "delivery" and what["event_id"] in faults:
            outcome[what["sink"]] = f"{what['status']}: {what.get('note') or ''}".strip()

    controller.listeners.append(listen)
    try:
        await controller.on_nova_notification(delete_start(instance_uuid, host))
        t0 = time.monotonic()
        await cut()
        detected = await wait_fault(t0)
        deadline = time.monotonic() + 5
        while len(outcome) < len(controller.reporters) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)          # anything a sink would have got by now
    finally:
        controller.listeners.remove(listen)
    suppressed = bool(outcome) and all(v.startswith("suppressed") for v in outcome.values())
    return {"instance": instance_uuid, "operation": "delete",
            "detect_ms": None if detected is None else round((detected - t0) * 1000, 3),
            "stored": bool(faults), "deliveries": outcome,
            "reported": reported(t0),
            "ok": detected is not None and bool(faults) and suppressed and not reported(t0),
            "_mono": t0}


async def agent_silence(controller: Any, stop_agent: Callable[[], Awaitable[None]],
                        host: str) -> dict[str, Any]:
    flagged = asyncio.get_running_loop().create_future()

    def listen(what: dict[str, Any]) -> None:
        if what["type"] == "host" and what["host"] == host and what["state"] == "silent" \
                and not flagged.done():
            flagged.set_result((time.monotonic(), what["quiet_s"]))

    controller.listeners.append(listen)
    down_after = controller.hosts.down_after_s if controller.hosts is not None else None
    try:
        t0 = time.monotonic()
        await stop_agent()
        try:
            t1, quiet_s = await asyncio.wait_for(flagged, (down_after or 0) + 5)
        except asyncio.TimeoutError:
            t1 = quiet_s = None
    finally:
        controller.listeners.remove(listen)
    return {"host": host, "agent_down_after_s": down_after,
            "flagged_ms": None if t1 is None else round((t1 - t0) * 1000, 3),
            # since its last report (the allowance counts from there)
            "quiet_ms": None if quiet_s is None else round(quiet_s * 1000, 3),
            "ok": t1 is not None}
