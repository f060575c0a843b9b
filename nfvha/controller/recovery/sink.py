"""The ``recovery`` sink: decides on each fault (policy.py, its state in the
store) and has the mode's executor act on it.

Being a sink, it gets what every delivery has: the fault is stored before it
runs, one controller holds the lease, a crash resumes it, a planned Nova
operation suppresses it. Once per fault: the action record is keyed by the
event id and moves forward only, so a resumed delivery whose action is
issued (or done) does not act again, and one that died while ``issuing``
asks again with the same id (the compute agent answers a repeat without
acting twice).

Nothing here imports the controller: its collaborators come in through
``bind`` (wiring.py builds them from a controller).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Iterable, Optional

from nfvha.controller.recovery.executor import Executor, Outcome
from nfvha.controller.recovery.policy import ACT, EXHAUST, EXHAUST_REASON, WAIT, Policy
from nfvha.controller.reporters import Reject
from nfvha.controller.timeutil import iso, parse_utc, utcnow

LOG = logging.getLogger(__name__)

# recovery_exhausted's id: uuid5 of the fault's id in this namespace, so a
# resumed delivery stores the same event again (a no-op), never a second one
EXHAUSTED_NAMESPACE = uuidlib.UUID("5d1f3c1e-6b0a-5a8e-9a51-7c1c0d9e8a20")
EXHAUSTED_KIND = "recovery_exhausted"
NOTICE_MARGIN_S = 5.0     # the notice's way to the guest and back
MAX_TEXT = 2000
STOP_ACTIONS = frozenset({"destroy", "nova_stop"})  # the guest is meant to stay off

StoreCall = Callable[..., Awaitable[Any]]  # (store method name, *args) in the DB thread


@dataclass
class Collaborators:
    store: StoreCall
    host_silent: Callable[[str], bool]
    # request_action(uuid, event_type, notification_type, timeout_ms)
    notice: Callable[[str, str, str, Optional[int]], Awaitable[Optional[dict[str, Any]]]]
    # store and deliver an event we make ourselves, to every sink but those named
    emit: Callable[[dict[str, Any], Iterable[str]], Awaitable[Any]]
    metrics: Any                                   # ControllerMetrics (recovery_* series)
    clock: Callable[[], float] = time.time         # epoch seconds, the policy's clock
    sleep: Callable[[float], Awaitable[Any]] = field(default=asyncio.sleep)


def exhausted_event_id(fault_id: str) -> str:
    return str(uuidlib.uuid5(EXHAUSTED_NAMESPACE, fault_id))


class RecoverySink:
    name = "recovery"

    def __init__(self, executor: Executor, policy: Policy, *, notice_timeout_s: float = 10.0,
                 recovered_timeout_s: float = 600.0,
                 sweep_interval_s: Optional[float] = None) -> None:
        self.executor = executor
        self.mode = executor.mode
        self.policy = policy
        self.notice_timeout_s = notice_timeout_s
        self.recovered_timeout_s = recovered_timeout_s
        self.sweep_interval_s = sweep_interval_s if sweep_interval_s is not None else \
            min(60.0, recovered_timeout_s / 4)
        # read by the controller's delivery engine instead of its 10 s: one
        # attempt may wait min_uptime_s, give notice, then act
        self.attempt_timeout_s = (policy.min_uptime_s + notice_timeout_s + NOTICE_MARGIN_S
                                  + executor.timeout_s + 30.0)
        self._c: Optional[Collaborators] = None
        self._sweeper: Optional[asyncio.Task[None]] = None

    # --- life cycle ----------------------------------------------------------------
    def bind(self, collaborators: Collaborators) -> None:
        self._c = collaborators
        collaborators.metrics.recovery_mode(self.mode, self.executor.actions.values())

    @property
    def c(self) -> Collaborators:
        if self._c is None:
            raise RuntimeError("recovery sink not bound to a controller")
        return self._c

    async def controller_started(self) -> None:
        """The store is open: start sweeping actions whose guest never came back."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="nfvha-recovery-sweep")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self.executor.aclose()

    # --- the delivery ---------------------------------------------------------------
    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        c = self.c
        rec = await c.store("get_action", event["id"])
        if rec is not None and rec["status"] != "waiting":
            return await self._resume(event, rec)
        # host_down (controller/hostfailure.py): the host is gone, its agent
        # with it; only an executor that acts without the host (Nova's
        # evacuate) has an action for it, and the silence is the point
        host_down = event["kind"] == "host_down"  # hostfailure.HOST_DOWN_KIND
        actions = getattr(self.executor, "host_down_actions", {}) if host_down \
            else self.executor.actions
        action = actions.get(event["corrective_action"])
        if action is None:
            return await self._skip(event, None,
                                    f"corrective_action {event['corrective_action']}: "
                                    f"no action{' for host_down' if host_down else ''} in "
                                    f"mode {self.mode}")
        while True:
            if not host_down and c.host_silent(event["host"]):
                return await self._skip(event, action, f"compute host {event['host']} is "
                                                       "silent: its agent cannot act or see "
                                                       "the guest come back")
            decision, rec = await c.store("decide_action", event, self.mode, action,
                                          self.policy, c.clock())
            if decision is None:      # decided meanwhile (another controller's delivery)
                return await self._resume(event, rec)
            if decision.verdict == ACT:
                return await self._carry_out(event, rec, fresh=True)
            if decision.verdict == WAIT:
                assert decision.at is not None
                LOG.info("recovery of %s (%s) waits %.1f s: %s", event["instance_uuid"],
                         event["id"], decision.at - c.clock(), decision.reason)
                await c.sleep(max(0.0, decision.at - c.clock()))
                if await self._back_by_itself(event):
                    return await self._skip(event, action, "recovered by itself: the guest "
                                                           "heartbeats again")
                continue
            self._count(action, "skipped")
            if decision.verdict == EXHAUST:
                self.c.metrics.recovery_exhausted.inc()
                await self._emit_exhausted(event, decision.reason)
            LOG.warning("no recovery for %s (%s): %s", event["instance_uuid"], event["id"],
                        rec["reason"])
            return f"skipped: {rec['reason']}"

    async def _resume(self, event: dict[str, Any], rec: dict[str, Any]) -> Optional[str]:
        """A fault decided before (a resumed or repeated delivery)."""
        status, reason = rec["status"], rec["reason"] or ""
        if status == "issuing":     # died between asking and hearing: ask again, same id
            return await self._carry_out(event, rec, fresh=False)
        if status == "skipped":
            if reason.startswith(EXHAUST_REASON):  # in case the event was not stored yet
                await self._emit_exhausted(event, reason)
            return f"skipped: {reason}"
        if status == "failed":
            raise Reject(f"{rec['action']} failed: {reason}"[:MAX_TEXT])
        return f"{rec['action']} {status} already"

    async def _carry_out(self, event: dict[str, Any], rec: dict[str, Any],
                         fresh: bool) -> Optional[str]:
        c, action = self.c, rec["action"]
        notice = ""
        if fresh and event["kind"] == "unhealthy" and self.notice_timeout_s > 0:
            notice = await self._notice(event)
        outcome = await self.executor.execute(event["id"], event, action)  # Retry: ask again
        detail = "; ".join(x for x in (notice, outcome.detail) if x)
        if outcome.ok and action in STOP_ACTIONS:
            # the guest asked to be stopped: done is success, nothing comes back
            if await c.store("mark_action_done", event["id"], outcome.done_at, detail):
                self._count(action, "succeeded")
            LOG.warning("recovery of %s (%s): %s done: %s", event["instance_uuid"],
                        event["id"], action, detail)
            return f"{action} done" + (f": {detail}" if detail else "")
        if outcome.ok:
            if await c.store("mark_action_issued", event["id"], outcome.done_at, detail):
                self._count(action, "issued")
            LOG.warning("recovery of %s (%s): %s issued: %s", event["instance_uuid"],
                        event["id"], action, detail)
            return f"{action} issued" + (f": {detail}" if detail else "")
        if await c.store("mark_action_failed", event["id"], detail, outcome.done_at):
            self._count(action, "failed")
        raise Reject(f"{action} failed: {detail}"[:MAX_TEXT])

    async def _notice(self, event: dict[str, Any]) -> str:
        """A guest that still answers is told of the action first, briefly."""
        kind = event["corrective_action"]
        try:
            async with asyncio.timeout(self.notice_timeout_s + NOTICE_MARGIN_S):
                answer = await self.c.notice(event["instance_uuid"], kind, "irrevocable",
                                             int(self.notice_timeout_s * 1000))
        except asyncio.TimeoutError:
            return f"notice {kind}: no answer"
        except Exception as exc:  # a notice is a courtesy: it never stops the action
            LOG.warning("notice %s to %s failed: %s", kind, event["instance_uuid"], exc)
            return f"notice {kind}: {type(exc).__name__}"
        if answer is None:
            return f"notice {kind}: instance unknown"
        return f"notice {kind}: {answer.get('result')}"

    async def _back_by_itself(self, event: dict[str, Any]) -> bool:
        inst = await self.c.store("get_instance", event["instance_uuid"])
        if inst is None:
            return False
        hb = inst.get("heartbeat") or {}
        if hb.get("state") != "enabled" or hb.get("health") == "unhealthy":
            return False
        state_at = inst.get("state_at")
        return state_at is None or parse_utc(state_at) >= parse_utc(event["detected_at"])

    async def _skip(self, event: dict[str, Any], action: Optional[str], reason: str) -> str:
        changed, rec = await self.c.store("skip_action", event, self.mode, action, reason)
        if not changed:               # decided meanwhile: that decision stands
            return await self._resume(event, rec) or ""
        self._count(action, "skipped")
        LOG.info("no recovery for %s (%s): %s", event["instance_uuid"], event["id"], reason)
        return f"skipped: {reason}"

    async def _emit_exhausted(self, event: dict[str, Any], reason: str) -> None:
        detail = (f"{reason[len(EXHAUST_REASON):] if reason.startswith(EXHAUST_REASON) else reason}"
                  f"; no further action on this instance until an operator re-arms it "
                  f"(nfvha recovery rearm {event['instance_uuid']})")
        await self.c.emit({
            "id": exhausted_event_id(event["id"]), "instance_uuid": event["instance_uuid"],
            "host": event["host"], "kind": EXHAUSTED_KIND,
            "corrective_action": event["corrective_action"], "detail": detail,
            "detected_at": iso(utcnow())}, (self.name,))

    def _count(self, action: Optional[str], status: str, mode: Optional[str] = None) -> None:
        self.c.metrics.recovery_actions.labels(mode or self.mode, action or "none",
                                               status).inc()

    # --- what the controller forwards ---------------------------------------------
    async def instances_enabled(
            self, enabled: list[tuple[str, Optional[datetime], Optional[str]]]) -> None:
        """Instances heartbeat ((uuid, at, health) of each enabled one, from
        instance_state or a hello): the first action asked for each before
        then has succeeded. One query finds the few with an action open."""
        healthy = [(u, at) for u, at, health in enabled if health != "unhealthy"]
        if not healthy:
            return
        open_ = await self.c.store("instances_with_open_actions", [u for u, _ in healthy])
        for uuid, at in healthy:
            if uuid in open_:
                await self.instance_enabled(uuid, at)

    async def instance_enabled(self, instance_uuid: str, at: Optional[datetime]) -> None:
        rec = await self.c.store("mark_recovered", instance_uuid, at or utcnow())
        if rec is None:
            return
        self._count(rec["action"], "succeeded", rec["mode"])
        if rec["recovery_ms"] is not None:
            self.c.metrics.recovery_seconds.observe(rec["recovery_ms"] / 1000.0)
        LOG.warning("recovery of %s (%s) succeeded: %s, heartbeat back %s ms after the "
                    "fault", instance_uuid, rec["event_id"], rec["action"], rec["recovery_ms"])

    async def recovery_result(self, action_id: Any = None, ok: Any = None, detail: Any = "",
                              host: Any = None, instance_uuid: Any = None,
                              done_at: Any = None, **extra: Any) -> dict[str, Any]:
        """A compute's answer to ``recover`` (bus method, forwarded by the
        controller). Checked like any bus input: refused, never raised."""
        error = _result_error(action_id, ok, detail, host, instance_uuid, done_at)
        if error is not None:
            self.c.metrics.invalid.labels("recovery_result").inc()
            LOG.warning("recovery_result from %r refused: %s", host, error)
            return {"ok": False, "error": error}
        when = parse_utc(done_at) if done_at else utcnow()
        outcome = Outcome(bool(ok), (detail or "")[:MAX_TEXT], when)
        waiter = getattr(self.executor, "result", None)
        if waiter is not None and waiter(action_id, outcome):
            return {"ok": True}
        # nobody waits here (the asking controller died, or the answer came
        # late): the record still learns the result
        rec = await self.c.store("get_action", action_id)
        if rec is None or rec["instance_uuid"] != instance_uuid:
            self.c.metrics.invalid.labels("recovery_result").inc()
            LOG.warning("recovery_result from %r for unknown action %r on %r", host,
                        action_id, instance_uuid)
            return {"ok": False, "error": "no such action on that instance"}
        if rec["status"] == "issuing":
            if outcome.ok:
                moved = await self.c.store("mark_action_issued", action_id, when,
                                           outcome.detail)
                status = "issued"
            else:
                moved = await self.c.store("mark_action_failed", action_id, outcome.detail,
                                           when)
                status = "failed"
            if moved:
                self._count(rec["action"], status, rec["mode"])
        return {"ok": True}

    # --- actions whose guest never came back ----------------------------------------
    async def sweep(self) -> int:
        before = utcnow() - timedelta(seconds=self.recovered_timeout_s)
        failed = await self.c.store("fail_unrecovered", before,
                                    f"no heartbeat within {self.recovered_timeout_s:g} s of "
                                    "the action")
        for rec in failed:
            self._count(rec["action"], "failed", rec["mode"])
            LOG.warning("recovery of %s (%s) failed: %s", rec["instance_uuid"],
                        rec["event_id"], rec["reason"])
        return len(failed)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # store briefly unreachable: next round
                LOG.exception("recovery sweep failed")
            await asyncio.sleep(self.sweep_interval_s)


def _result_error(action_id: Any, ok: Any, detail: Any, host: Any, instance_uuid: Any,
                  done_at: Any) -> Optional[str]:
    if not isinstance(action_id, str) or not action_id or len(action_id) > 64:
        return "action_id must be a non-empty string of at most 64"
    if not isinstance(ok, bool):
        return "ok must be a boolean"
    if detail is not None and not isinstance(detail, str):
        return "detail must be a string"
    if not isinstance(host, str) or not host or len(host) > 255:
        return "host must be a non-empty string"
    if not isinstance(instance_uuid, str) or not instance_uuid or len(instance_uuid) > 64:
        return "instance_uuid must be a non-empty string of at most 64"
    if done_at is not None:
        if not isinstance(done_at, str) or len(done_at) > 64:
            return "done_at must be an ISO 8601 string"
        try:
            parse_utc(done_at)
        except ValueError:
            return "done_at must be an ISO 8601 string"
    return None
