"""The controller: the bus endpoint computes report to, and the REST API's
view of the store. It composes the parts that do the work: delivery.py
(every stored fault to every sink, leased in the store), hostwatch.py (the
compute agents' liveness), servergroup_service.py (server-group messaging)
and planned.py (Nova operations in progress).

Order of work for a fault: 1. validate (here); 2. commit event + one
pending delivery per sink; 3. ack the compute; 4. deliver to each sink,
retried until it acks or rejects for good (2 and 4: delivery.py).
"""
from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Iterable, Optional, TypeVar

from nfvha.bus.inventory import inventory_digest
from nfvha.controller import nova_notifications, validate
from nfvha.controller.delivery import Deliveries
from nfvha.controller.hosts import HostLiveness
from nfvha.controller.hostwatch import HostWatch, started_at_ok
from nfvha.controller.metrics import ControllerMetrics
from nfvha.controller.planned import PlannedOps
from nfvha.controller.reporters import Reporter
from nfvha.controller.reporters.log import LogReporter
from nfvha.controller.servergroup_service import ServerGroupService
from nfvha.controller.store import Store
from nfvha.gctune import tune_gc

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# How long request_action waits when no timeout_ms is given (the guest's own
# vote_secs or notice time applies, up to StarlingX's longest, restart_secs
# of 600 s), and the margin for the way there and back.
ACTION_WAIT_MAX_S = 600.0
ACTION_MARGIN_S = 5.0

Listener = Callable[[dict[str, Any]], None]


class Controller:
    # what compute agents and other controllers may call over the bus
    # (nfvha/bus/endpoint.py); the rest (stop, REST queries, ...) they may not
    BUS_METHODS = frozenset({
        "hello", "sync", "alive", "host_retired", "instance_state", "fault",
        "action_result", "recovery_result", "sg_instances", "sg_links", "sg_broadcast",
        "sg_status_query"})

    def __init__(self, db_url: str = "sqlite:///nfvha.sqlite",
                 reporters: Optional[list[Reporter]] = None, bus: Any = None,
                 retry_base_s: float = 0.05, retry_max_s: float = 30.0,
                 attempt_timeout_s: float = 10.0, lease_s: float = 0.75,
                 controller_id: Optional[str] = None,
                 rng: Optional[Callable[[], float]] = None,
                 server_groups: Any = None, agent_down_after_s: float = 10.0,
                 planned_grace_s: float = 0.25, planned_linger_s: float = 5.0) -> None:
        self.db_url = db_url
        # Owner name of delivery leases. Stable across restarts (the host name)
        # so a restarted controller resumes its own deliveries at once; give
        # each controller its own id when several share one host and store.
        self.controller_id = controller_id or socket.gethostname()
        self.reporters: dict[str, Reporter] = {}
        for rep in (reporters if reporters is not None else [LogReporter()]):
            if rep.name in self.reporters:
                raise ValueError(f"two reporters named {rep.name!r}")
            self.reporters[rep.name] = rep
        self.bus = bus  # for controller → compute casts; served by the caller
        # Server-group messaging (membership, routing); `server_groups` is the
        # config's groups (a list or mapping, servergroups.load_config).
        self.servergroups = ServerGroupService(bus)
        self._config_groups = server_groups
        self.metrics = ControllerMetrics(sinks=list(self.reporters),
                                         methods=sorted(self.BUS_METHODS))
        # Compute agents' liveness (their `alive` fanout); None: not tracked
        self.hosts: Optional[HostLiveness] = (
            HostLiveness(agent_down_after_s) if agent_down_after_s > 0 else None)
        self.hostwatch = HostWatch(self.hosts, self.metrics, self._db, self._notify, bus)
        # Nova operations in progress (planned.py), fed by on_nova_notification
        self.planned = PlannedOps(linger_s=planned_linger_s)
        self.deliveries = Deliveries(
            self.reporters, self.metrics, self._db, self._lease_db, self._notify,
            self.planned, controller_id=self.controller_id, lease_s=lease_s,
            retry_base_s=retry_base_s, retry_max_s=retry_max_s,
            attempt_timeout_s=attempt_timeout_s, planned_grace_s=planned_grace_s,
            rand=rng or random.random)
        self.store: Optional[Store] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._lease_executor: Optional[ThreadPoolExecutor] = None
        self.listeners: list[Listener] = []
        self._actions: dict[str, asyncio.Future[dict[str, Any]]] = {}  # votes asked
        self.started = False

    # Set from outside (the wiring, tests), kept where the work is done.
    @property
    def host_failure(self) -> Any:
        """Host failure (hostfailure.py): tells a dead host from a dead agent
        by a second signal; None: off. Set by the wiring (hostfailure.build)."""
        return self.hostwatch.host_failure

    @host_failure.setter
    def host_failure(self, monitor: Any) -> None:
        self.hostwatch.host_failure = monitor

    @property
    def planned_active(self) -> bool:
        """A Nova notification listener runs: faults are held and checked
        against the operations in progress before delivery."""
        return self.deliveries.planned_active

    @planned_active.setter
    def planned_active(self, active: bool) -> None:
        self.deliveries.planned_active = active

    # --- life cycle --------------------------------------------------------
    async def start(self) -> None:
        # SQLite serialises writers: one DB thread avoids "database is locked"
        sqlite = self.db_url.startswith("sqlite")
        self._executor = ThreadPoolExecutor(1 if sqlite else 4, thread_name_prefix="nfvha-db")
        # Lease renewal on a thread (and connection) of its own: a flood of
        # fault writes must not delay it past the lease, or another controller
        # takes over deliveries this one is still making.
        self._lease_executor = self._executor if sqlite else ThreadPoolExecutor(
            1, thread_name_prefix="nfvha-lease")
        self.store = await self._db(Store, self.db_url)
        await self.servergroups.start(self.store, self._db, self._config_groups)
        await self.deliveries.start(self.store)
        await self.hostwatch.start(self.store)
        for rep in self.reporters.values():
            started = getattr(rep, "controller_started", None)  # the recovery sink's sweep
            if started is not None:
                await started()
        self.started = True
        tune_gc()  # bench/servergroup_latency.py: single deliveries of 90-110 ms gone
        # The caller serves us on the bus (bus.serve_controller(controller)) once
        # start() returned, so no report arrives before the store is open.

    async def stop(self, release_leases: bool = True) -> None:
        """Stop delivering and hand over: a sink being called now gets up to
        ``deliveries.stop_grace_s`` to answer (so it is not told twice), the
        rest stays pending in the store. With ``release_leases`` other
        controllers take it over at their next claim, else when the leases
        run out (as after a crash). A fault arriving meanwhile is stored for
        them, not sent."""
        self.started = False
        self.deliveries.halt()
        await self.servergroups.stop()
        await self.hostwatch.stop()
        await self.deliveries.stop(release_leases)
        for rep in self.reporters.values():
            aclose = getattr(rep, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # closing must not stop the rest from closing
                    LOG.exception("closing reporter %s", rep.name)
        if self.store is not None:
            await self._db(self.store.close)
        if self._lease_executor is not None and self._lease_executor is not self._executor:
            self._lease_executor.shutdown(wait=True)
        self._lease_executor = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("controller not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _lease_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Like _db, on the lease thread (see start)."""
        assert self._lease_executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._lease_executor, fn, *args)

    # --- bus endpoint: compute → controller ---------------------------------
    async def hello(self, host: str, instances: list[dict[str, Any]],
                    agent_started_at: Any = None) -> dict[str, Any]:
        """A compute (re)started and lists the instances it serves now."""
        assert self.store is not None
        if not isinstance(instances, list):
            self.metrics.invalid.labels("hello").inc()
            return {"ok": False, "error": "instances must be a list"}
        if not isinstance(host, str) or not host or len(host) > validate.MAX_HOST:
            self.metrics.invalid.labels("hello").inc()
            return {"ok": False, "error": "host must be a non-empty string"}
        records, errors = [], []
        if not started_at_ok(agent_started_at):
            # the instance list still counts: refusing it would leave the
            # store behind what the compute runs
            errors.append("agent_started_at ignored: not a string of at most 64")
            agent_started_at = None
        for i, item in enumerate(instances):
            try:  # a bad item is refused alone: the good ones are kept
                records.append(validate.instance_record(host, item))
            except validate.Invalid as exc:
                errors.append(f"instances[{i}]: {exc}")
        if errors:
            self.metrics.invalid.labels("hello").inc(len(errors))
            LOG.warning("hello from %r: %d bad items: %s", host, len(errors),
                        errors[:3])
        # the start time too: a hello is often a restarted agent's first word
        # to this controller, before its next `alive`
        self.hostwatch.seen(host, agent_started_at, len(records))

        def apply() -> None:
            assert self.store is not None
            self.store.forget_host_instances_except(host, [r["uuid"] for r in records])
            for r in records:
                self.store.upsert_instance(r)

        await self._db(apply)
        await self._recovered(records)  # a resync may be the first word of a recovery
        for r in records:
            await self.servergroups.on_heartbeat(host, r["uuid"], r["state"], r.get("at"),
                                                 r.get("health"))
        return {"ok": not errors, "instances": len(records), "errors": errors}

    async def alive(self, host: Any, agent_started_at: Any = None,
                    instances: Any = None, starved: Any = None,
                    management_address: Any = None) -> dict[str, Any]:
        """A compute agent's periodic sign of life (a fanout: every controller
        hears it), with the instances whose guests it finds starved of CPU
        and the address its host answers on (management network)."""
        return self.hostwatch.alive(host, agent_started_at, instances, starved,
                                    management_address)

    async def ask_computes_to_resync(self) -> None:
        """Called once this controller is on the bus: every compute agent sends
        its full instance list (`hello`). A compute agent that started first
        cast its hello and state changes to nobody (no controller queue yet),
        and the periodic digest would find that out only after
        `sync_interval_s`."""
        if self.bus is not None:
            try:
                await self.bus.fanout_compute("resync")
            except Exception:  # the digest will catch up: not a reason to stop
                LOG.exception("asking the compute agents to resync failed")

    async def sync(self, host: str, count: int, digest: str) -> dict[str, Any]:
        """A compute's periodic digest of its instances (nfvha/bus/inventory.py):
        a mismatch with the store asks it for the full list."""
        assert self.store is not None
        try:
            validate.sync_report(host, count, digest)
        except validate.Invalid as exc:
            self.metrics.invalid.labels("sync").inc()
            return {"ok": False, "error": str(exc)}
        ours = await self._db(self.store.host_inventory, host)
        if inventory_digest(ours) == digest:
            return {"ok": True, "in_step": True}
        LOG.info("compute %s: %s instances there, %d here, digest differs: asking for a resync",
                 host, count, len(ours))
        self.metrics.resyncs.inc()
        if self.bus is not None:
            await self.bus.cast_compute(host, "resync")
        return {"ok": True, "in_step": False}

    # --- votes and notices (StarlingX action_notify), asked through the REST API ---
    async def request_action(self, instance_uuid: str, event_type: str,
                             notification_type: str = "revocable",
                             timeout_ms: Optional[int] = None) -> Optional[dict[str, Any]]:
        """Asks the instance's guest about an action (revocable: it may reject)
        or tells it (irrevocable) and waits for the answer. None: unknown
        instance. ``proceed`` is what the caller should do: a single reject
        stops a revocable action; no answer in time counts as accept."""
        inst = await self.get_instance(instance_uuid)
        if inst is None:
            return None
        request_id = str(uuidlib.uuid4())
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._actions[request_id] = fut
        wait_s = _guest_deadline_s(inst, event_type, notification_type, timeout_ms) \
            + ACTION_MARGIN_S  # and the way back
        try:
            if self.bus is None:
                raise RuntimeError("no bus to reach the compute")
            await self.bus.cast_compute(
                inst["host"], "instance_action", request_id=request_id,
                reply_to=self.controller_id, instance_uuid=instance_uuid,
                event_type=event_type, notification_type=notification_type,
                timeout_ms=timeout_ms)
            answer = await asyncio.wait_for(fut, wait_s)
        except (asyncio.TimeoutError, RuntimeError) as exc:
            answer = {"result": "unknown", "log_msg": f"no answer from compute "
                      f"{inst['host']}: {type(exc).__name__}"}
        finally:
            self._actions.pop(request_id, None)
        result = answer["result"]
        return {"instance_uuid": instance_uuid, "host": inst["host"], "action": event_type,
                "notification": notification_type, "result": result,
                "log_msg": answer.get("log_msg", ""),
                # as in StarlingX: only an explicit reject of a vote stops the action
                "proceed": not (notification_type == "revocable" and result == "reject")}

    async def action_result(self, request_id: str, result: str, log_msg: str = "",
                            **facts: Any) -> dict[str, Any]:
        """A compute's answer to `request_action` (a cast back to us)."""
        fut = self._actions.get(request_id) if isinstance(request_id, str) else None
        if fut is None or fut.done():
            LOG.info("action result %r for nobody waiting (late or not ours)", request_id)
            return {"ok": False, "error": "nobody waiting"}
        if not isinstance(result, str) or not isinstance(log_msg, str):
            self.metrics.invalid.labels("action_result").inc()
            return {"ok": False, "error": "result and log_msg must be strings"}
        fut.set_result({"result": result[:32], "log_msg": log_msg[:256]})
        return {"ok": True}

    async def instance_state(self, host: str, instance_uuid: str, state: str,
                             health: Optional[str] = None, interval_ms: Optional[int] = None,
                             corrective_action: Optional[str] = None,
                             name: Optional[str] = None, at: Optional[str] = None,
                             **facts: Any) -> dict[str, Any]:
        assert self.store is not None
        try:
            rec = validate.instance_record(host, {
                "instance_uuid": instance_uuid, "state": state, "health": health,
                "interval_ms": interval_ms, "corrective_action": corrective_action,
                "name": name, "at": at, **facts})
        except validate.Invalid as exc:
            self.metrics.invalid.labels("instance_state").inc()
            LOG.warning("instance_state from %r refused: %s", host, exc)
            return {"ok": False, "error": str(exc)}
        applied = await self._db(self.store.upsert_instance, rec)
        if rec["state"] == "enabled":
            self.planned.running(rec["uuid"])
            await self._recovered([rec])
        if applied:  # peers in its server groups hear of the change
            await self.servergroups.on_heartbeat(host, rec["uuid"], rec["state"], at,
                                                 rec.get("health"))
        return {"ok": True, "applied": applied}

    # --- recovery (controller/recovery/sink.py): the sink named "recovery" -------------
    async def _recovered(self, records: list[dict[str, Any]]) -> None:
        """Instances heartbeat (again): the recovery sink closes their actions."""
        hook = getattr(self.reporters.get("recovery"), "instances_enabled", None)
        enabled = [(r["uuid"], r.get("at"), r.get("health")) for r in records
                   if r["state"] == "enabled"]
        if hook is not None and enabled:
            try:
                await hook(enabled)
            except Exception:  # bookkeeping: the states themselves are stored
                LOG.exception("recovery bookkeeping failed")

    async def recovery_result(self, **kwargs: Any) -> dict[str, Any]:
        """A compute's answer to ``recover`` (a cast back to us)."""
        hook = getattr(self.reporters.get("recovery"), "recovery_result", None)
        if hook is None:
            self.metrics.invalid.labels("recovery_result").inc()
            return {"ok": False, "error": "this controller has no recovery sink"}
        return await hook(**kwargs)

    async def emit(self, event: dict[str, Any], skip_sinks: Iterable[str] = ()
                   ) -> dict[str, Any]:
        """An event the controller makes itself (recovery_exhausted): stored
        and delivered like a fault, to every sink but ``skip_sinks``.
        Idempotent by id."""
        assert self.store is not None
        return await self.deliveries.emit(validate.fault_event(event), skip_sinks)

    # --- bus endpoint: server-group messaging (servergroup_service.py) --------
    async def sg_instances(self, host: Any, instances: Any) -> dict[str, Any]:
        return self._counted("sg_instances",
                             await self.servergroups.sg_instances(host, instances))

    async def sg_links(self, host: Any, links: Any) -> dict[str, Any]:
        return self._counted("sg_links", await self.servergroups.sg_links(host, links))

    async def sg_broadcast(self, host: Any, source_instance: Any, data: Any,
                           **extra: Any) -> dict[str, Any]:
        return self._counted("sg_broadcast", await self.servergroups.sg_broadcast(
            host, source_instance, data, **extra))

    async def sg_status_query(self, host: Any, source_instance: Any, seq: Any,
                              **extra: Any) -> dict[str, Any]:
        return self._counted("sg_status_query", await self.servergroups.sg_status_query(
            host, source_instance, seq, **extra))

    # Server groups shared by controllers: what the others tell of changes
    # they made (servergroup_service.py); listed here, next to their methods.
    BUS_METHODS = BUS_METHODS | {"sg_groups_changed", "sg_member_changed"}

    async def sg_groups_changed(self, **kwargs: Any) -> dict[str, Any]:
        return self._counted("sg_groups_changed",
                             await self.servergroups.sg_groups_changed(**kwargs))

    async def sg_member_changed(self, **kwargs: Any) -> dict[str, Any]:
        return self._counted("sg_member_changed",
                             await self.servergroups.sg_member_changed(**kwargs))

    def _counted(self, method: str, answer: dict[str, Any]) -> dict[str, Any]:
        """nfvha_reports_invalid counts what the server-group service refused:
        the whole call (ok false) or its bad items (``refused``)."""
        refused = 1 if not answer.get("ok") else answer.get("refused", 0)
        if refused:
            self.metrics.invalid.labels(method).inc(refused)
        return answer

    async def fault(self, event: dict[str, Any]) -> dict[str, Any]:
        """Store, then ack; delivery happens afterwards. Idempotent by id."""
        assert self.store is not None
        received_mono = time.monotonic()
        try:
            ev = validate.fault_event(event)
        except validate.Invalid as exc:
            self.metrics.invalid.labels("fault").inc()
            LOG.warning("fault refused: %s", exc)
            # ok False is final: retrying the same bad event cannot succeed
            ev_id = event.get("id") if isinstance(event, dict) else None
            return {"ok": False, "id": ev_id if isinstance(ev_id, str) else None,
                    "error": str(exc)}
        return await self.deliveries.accept(ev, received_mono)

    # --- Nova notifications, listeners -------------------------------------
    async def on_nova_operation(self, note: dict[str, Any]) -> None:
        """Callback of this controller's own Nova notification listener
        (exchange ``nova``): the operations in progress (planned.py)."""
        self.planned_active = True
        try:
            change = nova_notifications.from_message(note)
        except nova_notifications.NotificationError as exc:
            self.metrics.invalid.labels("nova_notification").inc()
            LOG.warning("Nova notification ignored: %s", exc)
            return
        if change is not None:
            self.planned.observe(change, time.monotonic())

    async def on_nova_notification(self, note: dict[str, Any]) -> None:
        """One Nova notification for both uses (a single controller, tests):
        planned operations and server-group peers."""
        await self.on_nova_operation(note)
        await self.servergroups.on_nova_notification(note)

    def _notify(self, what: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(what)
            except Exception:
                LOG.exception("listener failed")

    async def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Wait until no delivery is in progress (tests, orderly shutdown)."""
        await self.deliveries.wait_idle(timeout)

    # --- queries (REST API) ------------------------------------------------
    async def list_instances(self) -> list[dict[str, Any]]:
        assert self.store is not None
        return [self._with_host_state(i) for i in await self._db(self.store.list_instances)]

    async def get_instance(self, uuid: str) -> Optional[dict[str, Any]]:
        assert self.store is not None
        inst = await self._db(self.store.get_instance, uuid)
        return self._with_host_state(inst) if inst is not None else None

    def _with_host_state(self, inst: dict[str, Any]) -> dict[str, Any]:
        # "silent": the heartbeat state shown is the last one heard, not news
        inst["host_state"] = self.hostwatch.state(inst["host"])
        return inst

    async def list_hosts(self) -> list[dict[str, Any]]:
        """Every compute this controller has heard of or expects, with its
        instances on record."""
        assert self.store is not None
        return await self.hostwatch.list_hosts()

    async def forget_host(self, host: str) -> bool:
        """An operator retired `host`: drop it and its instances on record,
        here and (by a fanout) in every other controller's view."""
        assert self.store is not None
        return await self.hostwatch.forget_host(host)

    def host_retired(self, host: Any) -> bool:
        """Bus endpoint too: another controller retired `host`."""
        return self.hostwatch.retired(host)

    async def list_events(self, since: Optional[datetime] = None,
                          limit: int = 1000) -> list[dict[str, Any]]:
        assert self.store is not None
        return await self._db(self.store.list_events, since, limit)

    async def get_event(self, event_id: str) -> Optional[dict[str, Any]]:
        assert self.store is not None
        return await self._db(self.store.get_event, event_id)

    async def healthy(self) -> bool:
        if self.store is None or not self.started:
            return False
        try:
            return await self._db(self.store.ping)
        except Exception:
            return False


def _guest_deadline_s(inst: dict[str, Any], event_type: str, notification_type: str,
                      timeout_ms: Optional[int]) -> float:
    """How long the guest has for an action: the caller's timeout, else what it
    registered (vote_secs, or the notice time for the action), else the most
    StarlingX allows."""
    from nfvha.protocol.host import notice_field

    if timeout_ms:
        return timeout_ms / 1000.0
    field = "vote_secs" if notification_type == "revocable" else notice_field(event_type)
    secs = (inst.get("facts") or {}).get(field)
    if isinstance(secs, (int, float)) and not isinstance(secs, bool) \
            and 0 < secs <= ACTION_WAIT_MAX_S:
        return float(secs)
    return ACTION_WAIT_MAX_S
