"""REST API of server groups: ``/v1/server-groups`` (for setups without Nova,
or groups Nova does not know about).

``PUT /v1/server-groups/{id}`` with ``{"name": ..., "members": [instance uuid
or instance name, ...]}`` creates or replaces a group (stored, so it survives
a controller restart); ``GET`` lists or shows groups with each member's
state; ``DELETE`` removes one. Groups that come from Nova are read-only here
(409): Nova owns them. Bounds ([servergroup] max_groups, max_members,
max_name_length): a group past them is a 400, one group too many a 403 (as
Nova's quota); ``GET`` pages with ``limit`` and ``marker`` (by id; without
them: every group, as the dashboard reads it).
"""
from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from nfvha.controller.apibounds import ApiLimits, StrictJSONRoute, page
from nfvha.controller.servergroup_service import GroupLimit, ServerGroupService

# Ids and members: no NUL (PostgreSQL cannot store it) and at least one
# character that is not white space to Python (str.strip), to JSON Schema
# (ECMA \s) and to pydantic (Rust \s) alike: their \s differ on
# U+001C-U+001F, U+0085 and U+FEFF, named here.
ID = r"^[^\x00]*[^\s\x1c-\x1f\x85\ufeff\x00][^\x00]*$"
NO_NUL = r"^[^\x00]*$"  # a group's name


def group_in(limits: ApiLimits) -> type[BaseModel]:
    """The PUT body with this controller's bounds in its schema, so the
    OpenAPI document says what is accepted (schemathesis checks it is)."""
    member = Field(min_length=1, max_length=limits.max_name_length, pattern=ID)
    return create_model(
        "GroupIn", __config__=ConfigDict(extra="forbid", strict=True),
        name=(str, Field("", max_length=limits.max_name_length, pattern=NO_NUL,
                         description="free text, at most [servergroup] max_name_length "
                         "characters")),
        members=(list[Annotated[str, member]], Field(
            max_length=limits.max_group_members,
            description="instance uuids or instance names (the name in "
            "cgcs.messaging.<name>.sock), at most [servergroup] max_members")))


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


def servergroups_router(service: ServerGroupService,
                        limits: Optional[ApiLimits] = None) -> APIRouter:
    limits = limits or ApiLimits()
    service.set_limits(limits.max_server_groups, limits.max_group_members,
                       limits.max_name_length)
    router = APIRouter(prefix="/v1/server-groups", tags=["server groups"],
                       route_class=StrictJSONRoute, responses={
                           400: {"description": "body not JSON nfvha accepts, or an "
                                 "invalid group"},
                           413: {"description": "request body larger than [api] "
                                 "max_body_bytes"}})
    GroupId = Path(min_length=1, max_length=limits.max_name_length, pattern=ID)

    @router.get("", response_model=list[GroupOut])
    async def list_groups(
        limit: Optional[int] = Query(None, ge=1, le=limits.max_list,
                                     description="at most this many (by id); default: all"),
        marker: Optional[str] = Query(None, max_length=limits.max_name_length,
                                      description="the last id of the previous page"),
    ) -> list[dict[str, Any]]:
        groups = service.list_groups()
        if limit is None and marker is None:
            return groups
        return page(sorted(groups, key=lambda g: g["id"]), "id", limit, marker)

    @router.get("/{group_id}", response_model=GroupOut,
                responses={404: {"description": "unknown group"}})
    async def get_group(group_id: str = GroupId) -> dict[str, Any]:
        g = service.get_group(group_id)
        if g is None:
            raise HTTPException(404, f"no server group {group_id}")
        return g

    async def put_group(body: BaseModel, group_id: str = GroupId) -> dict[str, Any]:
        try:
            await service.put_group(group_id, body.name, body.members)
        except GroupLimit as exc:
            raise HTTPException(403, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        except PermissionError as exc:
            raise HTTPException(409, str(exc)) from None
        g = service.get_group(group_id)
        assert g is not None
        return g

    # the body's model is made here, from the limits: not an annotation a
    # string (from __future__) could name
    put_group.__annotations__["body"] = group_in(limits)
    router.put("/{group_id}", response_model=GroupOut,
               responses={403: {"description": "[servergroup] max_groups reached"},
                          409: {"description": "the group comes from Nova"}})(put_group)

    @router.delete("/{group_id}", status_code=204, response_class=Response,
                   responses={404: {"description": "unknown group"},
                              409: {"description": "the group comes from Nova"}})
    async def delete_group(group_id: str = GroupId) -> Response:
        try:
            found = await service.delete_group(group_id)
        except PermissionError as exc:
            raise HTTPException(409, str(exc)) from exc
        if not found:
            raise HTTPException(404, f"no server group {group_id}")
        return Response(status_code=204)

    return router
