"""Shared by the recovery tests (no tests here): a controller with the
recovery sink on the in-process bus, and a compute endpoint that records
what it is asked and answers like the agent does."""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from nfvha.bus import make_bus
from nfvha.controller.recovery.executor import Executor
from nfvha.controller.recovery.libvirt import LibvirtExecutor
from nfvha.controller.recovery.policy import Policy
from nfvha.controller.recovery.sink import RecoverySink
from nfvha.controller.recovery.wiring import attach
from nfvha.controller.reporters.log import LogReporter
from nfvha.controller.service import Controller

HOST = "cmp-1"


def now_iso(delta_s: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=delta_s)).isoformat(
        timespec="microseconds")


def fault(vm: str, kind: str = "heartbeat_loss", action: str = "reboot",
          detected_ago_s: float = 0.0, host: str = HOST) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "instance_uuid": vm, "host": host, "kind": kind,
            "corrective_action": action, "detail": "test fault",
            "detected_at": now_iso(-detected_ago_s)}


def record(vm: str, state: str = "enabled", health: Optional[str] = "healthy",
           at: Optional[str] = None) -> dict[str, Any]:
    return {"uuid": vm, "state": state, "health": health, "interval_ms": 1000,
            "corrective_action": "reboot", "at": at or now_iso()}


class RecordingCompute:
    """The compute agent's side of recovery and notices: records every call
    (in order) and answers as the agent does. ``drop`` unanswered first asks
    imitate a lost answer; ``ok``/``detail`` what it answers."""

    def __init__(self, bus: Any, host: str = HOST) -> None:
        self.bus = bus
        self.host = host
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.drop = 0
        self.ok = True
        self.detail = "domain reset"
        self.notice_result = "complete"

    def recovers(self) -> list[dict[str, Any]]:
        return [kw for m, kw in self.calls if m == "recover"]

    async def recover(self, action_id: str, reply_to: str, instance_uuid: str,
                      action: str) -> None:
        self.calls.append(("recover", {"action_id": action_id, "reply_to": reply_to,
                                       "instance_uuid": instance_uuid, "action": action}))
        if self.drop > 0:
            self.drop -= 1
            return
        await self.bus.reply_controller(reply_to, "recovery_result", action_id=action_id,
                                        host=self.host, instance_uuid=instance_uuid,
                                        ok=self.ok, detail=self.detail, done_at=now_iso())

    async def instance_action(self, request_id: str, reply_to: str, instance_uuid: str,
                              event_type: str, notification_type: str,
                              timeout_ms: Optional[int] = None) -> None:
        self.calls.append(("instance_action", {"instance_uuid": instance_uuid,
                                               "event_type": event_type,
                                               "notification_type": notification_type,
                                               "timeout_ms": timeout_ms}))
        await self.bus.reply_controller(reply_to, "action_result", request_id=request_id,
                                        result=self.notice_result, log_msg="",
                                        host=self.host, instance_uuid=instance_uuid,
                                        event_type=event_type,
                                        notification_type=notification_type)

    async def resync(self) -> None:
        pass


class Rig:
    """Controller + recovery sink + recording compute on one in-process bus;
    ``restart()`` makes a new controller on the same database."""

    def __init__(self, db_url: str, policy: Policy, *, executor: Optional[Executor] = None,
                 notice_timeout_s: float = 2.0, recovered_timeout_s: float = 600.0,
                 agent_down_after_s: float = 0.0, sinks: Optional[list[Any]] = None) -> None:
        self.db_url = db_url
        self.policy = policy
        self.executor_arg = executor
        self.notice_timeout_s = notice_timeout_s
        self.recovered_timeout_s = recovered_timeout_s
        self.agent_down_after_s = agent_down_after_s
        self.extra_sinks = sinks
        self.bus: Any = None
        self.compute: Any = None
        self.c: Any = None
        self.sink: Any = None

    async def start(self) -> Rig:
        self.bus = make_bus("inproc://")
        await self.bus.start()
        self.compute = RecordingCompute(self.bus)
        await self.bus.serve_compute(HOST, self.compute)
        await self._controller()
        return self

    async def _controller(self) -> None:
        executor = self.executor_arg or LibvirtExecutor(self.bus, result_timeout_s=1.0)
        self.sink = RecoverySink(executor, self.policy, notice_timeout_s=self.notice_timeout_s,
                                 recovered_timeout_s=self.recovered_timeout_s,
                                 sweep_interval_s=0.2)
        sinks = self.extra_sinks if self.extra_sinks is not None else [LogReporter()]
        self.c = Controller(self.db_url, [*sinks, self.sink], bus=self.bus,
                            controller_id="ctl-1", retry_base_s=0.05, retry_max_s=0.3,
                            agent_down_after_s=self.agent_down_after_s)
        attach(self.sink, self.c)
        await self.c.start()
        await self.bus.serve_controller(self.c)

    async def restart(self) -> None:
        await self.c.wait_idle(30)
        await self.c.stop()
        # the bus keeps serving the old endpoint: a new bus for the new one
        await self.bus.stop()
        self.bus = make_bus("inproc://")
        await self.bus.start()
        self.compute.bus = self.bus
        await self.bus.serve_compute(HOST, self.compute)
        await self._controller()

    async def stop(self) -> None:
        if self.c is not None:
            await self.c.stop()
        if self.bus is not None:
            await self.bus.stop()

    async def fault_and_wait(self, ev: dict[str, Any], timeout: float = 20.0
                             ) -> dict[str, Any]:
        """Report ``ev`` and wait until every delivery of it is done."""
        await self.c.fault(ev)
        await asyncio.wait_for(self.c.wait_idle(), timeout)
        stored = await self.c.get_event(ev["id"])
        assert stored is not None
        return stored

    async def back(self, vm: str, at: Optional[str] = None) -> None:
        """The guest heartbeats again (its compute's instance_state)."""
        rec = record(vm, at=at)
        await self.c.instance_state(HOST, vm, rec["state"], rec["health"], 1000, "reboot",
                                    None, rec["at"])

    def metric(self, name: str, **labels: str) -> float:
        v = self.c.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v
