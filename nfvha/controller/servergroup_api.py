"""REST API of server groups: ``/v1/server-groups`` (for setups without Nova,
or groups Nova does not know about).

``PUT /v1/server-groups/{id}`` with ``{"name": ..., "members": [instance uuid
or instance name, ...]}`` creates or replaces a group (stored, so it survives
a controller restart); ``GET`` lists or shows groups with each member's
state; ``DELETE`` removes one. Groups that come from Nova are read-only here
(409): Nova owns them.
"""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field

from nfvha.controller.servergroup_service import ServerGroupService


class GroupIn(BaseModel):
    name: str = Field("", description="free text, at most 255 characters")
    members: list[Any] = Field(description="instance uuids or instance names "
                               "(the name in cgcs.messaging.<name>.sock)")


class Member(BaseModel):
    member: str = Field(description="as given in the group definition")
    instance_id: Optional[str]
    instance_name: Optional[str]
    host: Optional[str] = Field(description="compute host; null = not placed (unreachable)")
    state: Optional[str]
    task_state: Optional[str] = None
    power_state: Optional[str] = None
    heartbeat: Optional[str] = Field(None, description="nfvha heartbeat state")


class GroupOut(BaseModel):
    id: str
    name: str
    origin: Optional[str] = Field(description="api | config | nova")
    members: list[Member]


def servergroups_router(service: ServerGroupService) -> APIRouter:
    router = APIRouter(prefix="/v1/server-groups", tags=["server groups"])

    @router.get("", response_model=list[GroupOut])
    async def list_groups() -> list[dict[str, Any]]:
        return service.list_groups()

    @router.get("/{group_id}", response_model=GroupOut,
                responses={404: {"description": "unknown group"}})
    async def get_group(group_id: str) -> dict[str, Any]:
        g = service.get_group(group_id)
        if g is None:
            raise HTTPException(404, f"no server group {group_id}")
        return g

    @router.put("/{group_id}", response_model=GroupOut,
                responses={400: {"description": "invalid group"},
                           409: {"description": "the group comes from Nova"}})
    async def put_group(group_id: str, body: GroupIn) -> dict[str, Any]:
        try:
            await service.put_group(group_id, body.name, body.members)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        except PermissionError as exc:
            raise HTTPException(409, str(exc)) from exc
        g = service.get_group(group_id)
        assert g is not None
        return g

    @router.delete("/{group_id}", status_code=204, response_class=Response,
                   responses={404: {"description": "unknown group"},
                              409: {"description": "the group comes from Nova"}})
    async def delete_group(group_id: str) -> Response:
        try:
            found = await service.delete_group(group_id)
        except PermissionError as exc:
            raise HTTPException(409, str(exc)) from exc
        if not found:
            raise HTTPException(404, f"no server group {group_id}")
        return Response(status_code=204)

    return router
