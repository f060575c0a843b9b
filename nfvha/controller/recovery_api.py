"""REST routes of recovery (docs/dev/contracts.md, "Recovery (issue 8)"):
an instance's loop-protection record, pausing it, re-arming it. They work
in every mode (the record lives in the store, whichever controller acts);
the POSTs change state, so [api] auth_strategy = keystone guards them."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from nfvha.controller.apibounds import StrictJSONRoute

MAX_UUID = 64


class RecoveryAction(BaseModel):
    event_id: str
    instance_uuid: str
    mode: str = Field(description="libvirt | nova")
    action: Optional[str] = Field(
        description="reset | destroy | nova_reboot | nova_stop | null (no action needed)")
    status: str = Field(description="waiting | issuing | issued | succeeded (the guest "
                        "heartbeats again) | failed | skipped (reason says why)")
    reason: Optional[str]
    issued_at: Optional[str] = Field(description="when the action was decided and asked (UTC)")
    done_at: Optional[str] = Field(description="when the compute or Nova carried it out, or "
                                   "it was skipped or failed (UTC)")
    recovered_at: Optional[str] = Field(description="the guest's heartbeat back (compute's "
                                        "clock, UTC)")
    recovery_ms: Optional[int] = Field(description="recovered_at − the fault's detected_at")


class Recovery(BaseModel):
    instance_uuid: str
    mode: str = Field(description="this controller's [recovery] mode: none | libvirt | "
                      "nova | masakari")
    paused: bool = Field(description="an operator paused recovery: faults get no action")
    paused_reason: Optional[str]
    exhausted: bool = Field(description="max_actions within window_s were reached: no "
                            "action until re-armed")
    exhausted_at: Optional[str]
    action_times: list[str] = Field(description="the counted actions (UTC), oldest first")
    updated_at: Optional[str]


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "paused": 0 is no bool

    paused: bool
    reason: str = Field("", max_length=2000, description="why (shown with each skipped fault)")


def recovery_mode(controller: Any) -> str:
    sink = controller.reporters.get("recovery")
    if sink is not None:
        return str(sink.mode)
    return "masakari" if "masakari" in controller.reporters else "none"


def recovery_router(controller: Any) -> APIRouter:
    router = APIRouter(prefix="/v1", route_class=StrictJSONRoute, responses={
        400: {"description": "body not JSON nfvha accepts"},
        413: {"description": "request body larger than [api] max_body_bytes"},
        422: {"description": "invalid uuid or body"},
        503: {"description": "controller not started"}})

    def store(name: str, *args: Any) -> Any:
        if controller.store is None:
            raise HTTPException(503, "controller not started")
        return controller._db(getattr(controller.store, name), *args)

    Uuid = Path(min_length=1, max_length=MAX_UUID)

    def checked(uuid: str) -> str:
        if not uuid or len(uuid) > MAX_UUID:
            raise HTTPException(422, f"instance uuid must be 1 to {MAX_UUID} characters")
        if "\x00" in uuid:  # never an instance (the bus refuses it), PostgreSQL cannot store it
            raise HTTPException(404, "no such instance")
        return uuid

    def shown(uuid: str, row: Optional[dict[str, Any]]) -> dict[str, Any]:
        row = row or {"instance_uuid": uuid, "paused": False, "paused_reason": None,
                      "exhausted": False, "exhausted_at": None, "action_times": [],
                      "updated_at": None}
        return {**row, "mode": recovery_mode(controller)}

    @router.get("/instances/{uuid}/recovery", response_model=Recovery,
                responses={404: {"description": "unknown instance"}})
    async def get_recovery(uuid: str = Uuid) -> dict[str, Any]:
        """The instance's loop protection: paused, exhausted, counted actions."""
        row = await store("get_recovery", checked(uuid))
        if row is None and await store("get_instance", uuid) is None:
            raise HTTPException(404, f"no instance {uuid}")
        return shown(uuid, row)

    @router.post("/instances/{uuid}/recovery", response_model=Recovery)
    async def pause_recovery(req: PauseRequest, uuid: str = Uuid) -> dict[str, Any]:
        """Pause (or resume) recovery of an instance: while paused its faults
        are still reported, but get no action. An instance not heard of yet
        may be paused ahead."""
        return shown(uuid, await store("set_recovery_paused", checked(uuid), req.paused,
                                       req.reason.replace("\x00", "")))

    @router.post("/instances/{uuid}/recovery/rearm", response_model=Recovery)
    async def rearm_recovery(uuid: str = Uuid) -> dict[str, Any]:
        """Clear the exhausted mark and the counted actions."""
        return shown(uuid, await store("rearm_recovery", checked(uuid)))

    return router
