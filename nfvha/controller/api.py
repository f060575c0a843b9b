"""REST API of the controller (JSON; OpenAPI document at /openapi.json).

``make_app(controller, limits)`` builds the app; other parts add their
routes with ``app.include_router(router)`` (server groups do).  ``serve``
runs uvicorn inside the caller's event loop, next to the controller and the
bus.  What the API accepts and how it refuses the rest: apibounds.py (body
limit 413, strict JSON 400, validation 422, caps, paging); no input is a
500 (tests/test_rest_limits_*.py, tests/test_schemathesis_*.py).
"""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional

import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from nfvha.controller.apibounds import (
    ApiLimits,
    StrictJSONRoute,
    page,
    validation_error_handler,
)
from nfvha.controller.dashboard import dashboard_router
from nfvha.controller.recovery_api import RecoveryAction, recovery_router
from nfvha.controller.service import Controller
from nfvha.protocol.heartbeat import EVENT_TYPES


def _iso_only(value: Any) -> Any:
    """pydantic would read ``since=0.5`` as a Unix time: only ISO 8601 here."""
    if isinstance(value, str) and not re.match(r"\s*[0-9]{4}-", value):
        raise ValueError("an ISO 8601 time (YYYY-MM-DD...)")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


def _json_int(value: Any) -> Any:
    """A JSON integer (42 or 42.0, as JSON Schema has it), not "42" or true."""
    if isinstance(value, (str, bool)):
        raise ValueError("an integer")
    return value


# bounds inside the Annotated: outside, with a BeforeValidator, pydantic
# writes them into the schema as "ge"/"le", which JSON Schema does not know
TimeoutMs = Annotated[int, Field(ge=1, le=600_000), BeforeValidator(_json_int)]


class Heartbeat(BaseModel):
    state: str = Field(description="waiting | enabled | disabled | failed")
    health: Optional[str] = Field(description="healthy | unhealthy | null")
    interval_ms: Optional[int]


class Instance(BaseModel):
    uuid: str
    host: str
    name: Optional[str]
    heartbeat: Heartbeat
    corrective_action: Optional[str]
    facts: dict[str, Any] = Field(description="other facts the guest registered with")
    state_at: Optional[str] = Field(description="when the compute saw this state (UTC)")
    updated_at: Optional[str] = Field(description="when the controller stored it (UTC)")
    host_state: str = Field(
        "unknown", description="up | silent | unknown: its compute agent reports / has "
        "been silent for [heartbeat] agent_down_after_s (the heartbeat state above is "
        "then the last one heard: nobody heartbeats this guest) / not heard from yet")


class Host(BaseModel):
    host: str
    state: str = Field(description="up | silent | unknown (not heard from since this "
                       "controller started; silent once agent_down_after_s passed)")
    since: Optional[str] = Field(description="when it entered this state (UTC)")
    last_seen_at: Optional[str] = Field(description="its agent's last report (UTC)")
    agent_started_at: Optional[str] = Field(description="when its agent started (UTC)")
    instances: Optional[int] = Field(description="instances its agent last reported")
    instances_on_record: int = Field(description="instances the store holds for it")
    silences: int = Field(description="times it went silent since this controller started")
    restarts: int = Field(description="agent restarts seen since this controller started")
    starved: list[str] = Field(default_factory=list, description=(
        "its instances whose guests get too little CPU to answer their heartbeat in "
        "time, as its agent last reported them: a host condition, not a VM fault"))
    host_failure: Optional[str] = Field(default=None, description=(
        "while its agent is silent, what a second signal says ([hosts]): checking | "
        "agent_only (the host answers: no VM fault) | host_down (every VM on it "
        "reported host_down) | held (too many hosts down at once); null: not asked"))
    host_failure_reason: Optional[str] = Field(default=None, description=(
        "what the signals said"))
    management_address: Optional[str] = Field(default=None, description=(
        "the address its host is probed on"))


class Delivery(BaseModel):
    sink: str
    status: str = Field(description="pending | delivered | rejected | suppressed (a Nova "
                        "operation in progress explained the fault; note says which)")
    attempts: int
    last_error: Optional[str]
    note: Optional[str]
    delivered_at: Optional[str]


class Event(BaseModel):
    id: str
    instance_uuid: str
    host: str
    kind: str = Field(description="heartbeat_loss | unhealthy | channel_lost | ... | "
                      "recovery_exhausted (made by the controller)")
    corrective_action: str
    detail: str
    detected_at: str
    received_at: str
    deliveries: list[Delivery]
    action: Optional[RecoveryAction] = Field(
        None, description="what the recovery sink did about it ([recovery] mode libvirt or "
        "nova); null: no recovery sink handled it (yet)")


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal[EVENT_TYPES] = Field(  # type: ignore[valid-type]
        description="the StarlingX event type: stop, reboot, pause, live_migrate_begin, ...")
    notification: Literal["revocable", "irrevocable"] = Field(
        "revocable", description="revocable: a vote the guest may reject; irrevocable: a "
        "notice it gets time to prepare for")
    timeout_ms: Optional[TimeoutMs] = Field(
        None, description="how long the guest has to answer; default its "
        "registered vote_secs (votes) or notice time (notices)")


class ActionAnswer(BaseModel):
    instance_uuid: str
    host: str
    action: str
    notification: str
    result: str = Field(description="accept | reject | complete | timeout | error | unknown")
    log_msg: str
    proceed: bool = Field(description="false only when the guest rejected a vote")


class Health(BaseModel):
    status: str
    store: bool


# what every route may answer besides its own codes (apibounds.py)
BOUNDS: dict[int | str, dict[str, Any]] = {
    400: {"description": "body not JSON nfvha accepts (NaN, huge numbers, lone "
               "surrogates, too deep) or an invalid value"},
    413: {"description": "request body larger than [api] max_body_bytes"},
}


def v1_router(controller: Controller, limits: Optional[ApiLimits] = None) -> APIRouter:
    limits = limits or ApiLimits()
    router = APIRouter(prefix="/v1", route_class=StrictJSONRoute, responses=BOUNDS)

    @router.get("/instances", response_model=list[Instance])
    async def list_instances(
        limit: Optional[int] = Query(None, ge=1, le=limits.max_list,
                                     description="at most this many (by uuid); "
                                     "default: all"),
        marker: Optional[str] = Query(None, max_length=255,
                                      description="the last uuid of the previous page"),
    ) -> list[dict[str, Any]]:
        found = await controller.list_instances()
        if limit is None and marker is None:
            return found  # as before paging: by host, then uuid
        return page(sorted(found, key=lambda i: i["uuid"]), "uuid", limit, marker)

    @router.get("/instances/{uuid}", response_model=Instance,
                responses={404: {"description": "unknown instance"}})
    async def get_instance(uuid: str) -> dict[str, Any]:
        inst = await controller.get_instance(_stored(uuid))
        if inst is None:
            raise HTTPException(404, f"no instance {uuid}")
        return inst

    @router.get("/hosts", response_model=list[Host])
    async def list_hosts() -> list[dict[str, Any]]:
        return await controller.list_hosts()

    @router.delete("/hosts/{host}", status_code=204,
                   responses={404: {"description": "unknown host"}})
    async def forget_host(host: str) -> Response:
        """Retire a compute host: stop expecting it, drop its instances on record."""
        if not await controller.forget_host(_stored(host)):
            raise HTTPException(404, f"no host {host}")
        return Response(status_code=204)

    @router.post("/instances/{uuid}/actions", response_model=ActionAnswer,
                 responses={404: {"description": "unknown instance"}})
    async def instance_action(uuid: str, req: ActionRequest) -> dict[str, Any]:
        """Ask the guest about an action before doing it (a vote) or tell it
        (a notice), as StarlingX's VIM does; answers when the guest did."""
        answer = await controller.request_action(_stored(uuid), req.action, req.notification,
                                                 req.timeout_ms)
        if answer is None:
            raise HTTPException(404, f"no instance {uuid}")
        return answer

    @router.get("/events", response_model=list[Event])
    async def list_events(
        since: Optional[IsoTime] = Query(
            None, description="only events the controller received after this ISO 8601 time "
            "(a naive time is UTC); pass the last event's received_at to poll"),
        limit: int = Query(1000, ge=1, le=10000),
    ) -> list[dict[str, Any]]:
        return await controller.list_events(_utc(since), limit)

    @router.get("/events/{event_id}", response_model=Event,
                responses={404: {"description": "unknown event"}})
    async def get_event(event_id: str) -> dict[str, Any]:
        ev = await controller.get_event(_stored(event_id))
        if ev is None:
            raise HTTPException(404, f"no event {event_id}")
        return ev

    return router


def _stored(key: str) -> str:
    """A key the store could hold: one with a NUL (PostgreSQL cannot store
    it, the bus validators refuse it) is known to be unknown (404)."""
    if "\x00" in key:
        raise HTTPException(404, "no such " + ("key" if len(key) > 64 else repr(key)))
    return key


def _utc(since: Optional[datetime]) -> Optional[datetime]:
    """``since`` in UTC. Year 1 or 9999 with an offset leaves datetime's
    range in UTC (it was a 500): such a time is before, or after, every
    event there can be, and is answered as the earliest, or latest, time."""
    if since is None or since.tzinfo is None:
        return since
    try:
        return since.astimezone(timezone.utc)
    except OverflowError:
        edge = datetime.min if since.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=timezone.utc)


def make_app(controller: Controller, limits: Optional[ApiLimits] = None) -> FastAPI:
    """The REST app; ``limits`` from the config (ApiLimits.from_conf), else
    the options' defaults."""
    limits = limits or ApiLimits()
    app = FastAPI(title="nfvha controller", version="1",
                  description="Guest heartbeat state and fault events of nfvha.",
                  max_body_size=limits.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.state.controller = controller
    app.state.limits = limits
    app.include_router(v1_router(controller, limits))
    app.include_router(recovery_router(controller))
    service = getattr(controller, "servergroups", None)
    if service is not None:
        from nfvha.controller.servergroup_api import servergroups_router

        app.include_router(servergroups_router(service, limits))

    @app.get("/healthz", response_model=Health,
             responses={503: {"description": "store unreachable or controller stopped"}})
    async def healthz(response: Response) -> dict[str, Any]:
        ok = await controller.healthy()
        if not ok:
            response.status_code = 503
        return {"status": "ok" if ok else "unavailable", "store": ok}

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                              "description": "Prometheus text format"}})
    async def metrics() -> Response:
        return Response(generate_latest(controller.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    app.include_router(dashboard_router())
    return app


class ApiServer:
    """uvicorn in the current event loop; ``start`` returns the bound port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off",
            access_log=False))
        self._task: Optional[asyncio.Task[None]] = None
        self.port = port

    async def start(self) -> int:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()  # bind failure: raise it here
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._task is not None:
            self.server.should_exit = True
            await self._task
            self._task = None


async def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve until cancelled (or uvicorn is told to exit)."""
    server = ApiServer(app, host, port)
    await server.start()
    try:
        assert server._task is not None
        await asyncio.shield(server._task)
    finally:
        await server.stop()
