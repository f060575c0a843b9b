"""Stand-in for the Nova compute API (only what nfvha calls).

Follows its published API (Compute API reference, "Reset Server State
(os-resetState Action)": https://docs.openstack.org/api-ref/compute/#reset-server-state-os-resetstate-action):
``POST /v2.1/servers/{server_id}/action`` with ``{"os-resetState":
{"state": "error"|"active"}}`` answers 202 with an empty body, 404 for an
unknown server (when a server list is given), 400 for a bad body.
The same action URL takes ``{"reboot": {"type": "HARD"|"SOFT"}}`` ("Reboot
Server (reboot Action)") and ``{"os-stop": null}`` ("Stop Server (os-stop
Action)"): 202 with an empty body; 409 ``conflictingRequest`` while a task
is in progress (``conflict_next(n)`` makes the next n such calls answer
it); 404 ``itemNotFound`` for an unknown server; 400 ``badRequest`` for a
bad body. Each accepted one is kept in ``actions`` as (server, action,
type).
``GET /v2.1/servers/{server_id}`` ("Show Server Details") answers
``{"server": {"id", "name", "status", "tenant_id", "user_id", "flavor",
"image", ...}}`` with the project given in ``projects`` (the Aodh sink looks
it up) and the flavor given in ``flavors``: from microversion 2.47 on (the
``OpenStack-API-Version: compute 2.N`` or ``X-OpenStack-Nova-API-Version``
header) the flavor is embedded (``original_name``, ``vcpus``, ``ram``,
``disk``, ``ephemeral``, ``swap``, ``extra_specs``), before it only
``{"id", "links"}``, and ``GET /v2.1/flavors/{flavor_id}/os-extra_specs``
("List Extra Specs For A Flavor") answers ``{"extra_specs": {...}}``.  ``GET /``
and ``GET /v2.1`` serve the version documents openstacksdk's microversion
discovery reads.

What Masakari's engine and API call (its instance-failure flow and host
registration, through python-novaclient at microversion 2.53), as the
api-ref says: "Show Server Details" carries ``metadata``,
``OS-EXT-STS:vm_state``/``task_state``/``power_state`` and
``OS-EXT-SRV-ATTR:host``, with ``status`` derived from the vm_state
(active ACTIVE, stopped SHUTOFF, error ERROR, paused PAUSED); ``{"os-stop":
null}`` and ``{"os-start": null}`` ("Stop Server", "Start Server") answer
202 and move the vm_state to stopped / active, or 409 ``conflictingRequest``
when the vm_state does not allow it (Nova's ``check_instance_state``: stop
from active, resized or error, start from stopped) or while a task is in
progress (``task_states[server] = "migrating"``, say: a planned operation);
``GET /v2.1/os-services?binary=nova-compute&host=H`` ("List Compute
Services") lists the compute service of each host in ``compute_hosts``
(every host when None) with a UUID id (2.53 and later).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from nfvha.standins._http import Standin


def _version_doc(base: str, version: str = "2.96") -> dict[str, Any]:
    return {"id": "v2.1", "status": "CURRENT", "version": version, "min_version": "2.1",
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base}/v2.1/"}]}


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    extra_specs: dict[str, str] = field(default_factory=dict)
    vcpus: int = 1
    ram: int = 512
    disk: int = 1


DEFAULT_FLAVOR = Flavor("1", "m1.tiny")
# Nova's server status for each vm_state the stand-in uses
VM_STATUS = {"active": "ACTIVE", "stopped": "SHUTOFF", "error": "ERROR", "paused": "PAUSED"}
# vm_states from which Nova accepts each action (nova/compute/api.py check_instance_state)
ALLOWED_FROM = {"reboot": ("active", "stopped", "paused", "suspended", "error"),
                "os-stop": ("active", "resized", "error"), "os-start": ("stopped",)}
NEXT_STATE = {"os-stop": "stopped", "os-start": "active"}


def _conflict(verb: str, server_id: str, why: str) -> JSONResponse:
    return JSONResponse({"conflictingRequest": {
        "code": 409, "message": f"Cannot '{verb}' instance {server_id} while it is in {why}"}},
        409)
FLAVOR_EMBEDDED_FROM = (2, 47)  # microversion from which servers embed their flavor


def _microversion(request: Request) -> tuple[int, int]:
    """The compute microversion a request asks for (2.1 without a header)."""
    value = request.headers.get("openstack-api-version", "")
    if value.lower().startswith("compute "):
        value = value[len("compute "):]
    else:
        value = request.headers.get("x-openstack-nova-api-version", "")
    major, _, minor = value.strip().partition(".")
    if value.strip() == "latest":
        return (2, 96)
    try:
        return (int(major), int(minor))
    except ValueError:
        return (2, 1)


class NovaStandin(Standin):
    title = "Nova stand-in"

    def __init__(self, servers: Optional[set[str]] = None,
                 projects: Optional[dict[str, str]] = None,
                 flavors: Optional[dict[str, Flavor]] = None,
                 max_version: str = "2.96",
                 compute_hosts: Optional[set[str]] = None,
                 metadata: Optional[dict[str, dict[str, str]]] = None) -> None:
        # None = every server id exists
        self.servers = servers
        self.projects = projects or {}
        # server id -> its flavor (others get DEFAULT_FLAVOR)
        self.flavors = flavors if flavors is not None else {}
        self.flavor_shows = 0  # GET /servers/{id} that carried a flavor
        self.max_version = max_version  # an older cloud: e.g. "2.46"
        self.shown = 0
        self.states: dict[str, str] = {}  # server id -> vm_state (default active)
        # server id -> task_state in progress (a migration, say): actions answer 409
        self.task_states: dict[str, str] = {}
        self.compute_hosts = compute_hosts  # None = every host runs nova-compute
        self.metadata = metadata or {}      # server id -> its metadata
        self.host_of: dict[str, str] = {}   # server id -> OS-EXT-SRV-ATTR:host
        # accepted reboot / os-stop calls: (server id, "reboot" | "os-stop", type or None)
        self.actions: list[tuple[str, str, Optional[str]]] = []
        self._conflicts = 0
        super().__init__()

    def conflict_next(self, n: int) -> None:
        """The next ``n`` reboot/os-stop calls find a task in progress (409)."""
        self._conflicts = n

    def _routes(self) -> None:
        app = self.app

        @app.get("/")
        async def versions(request: Request) -> dict[str, Any]:
            return {"versions": [_version_doc(str(request.base_url).rstrip("/"),
                                              self.max_version)]}

        @app.get("/v2.1")
        @app.get("/v2.1/")
        async def version(request: Request) -> dict[str, Any]:
            return {"version": _version_doc(str(request.base_url).rstrip("/"),
                                             self.max_version)}

        @app.get("/v2.1/servers/{server_id}")
        async def show(server_id: str, request: Request) -> Response:
            _rec, failed = await self._record(request)  # in attempts; fail_next applies
            if failed is not None:
                return failed
            if self.servers is not None and server_id not in self.servers:
                return JSONResponse({"itemNotFound": {
                    "code": 404, "message": f"Instance {server_id} could not be found."}}, 404)
            self.shown += 1
            state = self.states.get(server_id, "active")
            base = str(request.base_url).rstrip("/")
            fl = self.flavors.get(server_id, DEFAULT_FLAVOR)
            if _microversion(request) >= FLAVOR_EMBEDDED_FROM:
                flavor: dict[str, Any] = {
                    "original_name": fl.name, "vcpus": fl.vcpus, "ram": fl.ram,
                    "disk": fl.disk, "ephemeral": 0, "swap": 0,
                    "extra_specs": dict(fl.extra_specs)}
            else:
                flavor = {"id": fl.id, "links": [
                    {"rel": "bookmark", "href": f"{base}/flavors/{fl.id}"}]}
            self.flavor_shows += 1
            return JSONResponse({"server": {
                "flavor": flavor, "image": "",
                "id": server_id, "name": f"vm-{server_id[:8]}",
                "status": VM_STATUS.get(state, state.upper()),
                "tenant_id": self.projects.get(server_id, "standin-project"),
                "user_id": "standin-user", "OS-EXT-STS:vm_state": state,
                "OS-EXT-STS:task_state": self.task_states.get(server_id),
                "OS-EXT-STS:power_state": 1 if state == "active" else 4,
                "OS-EXT-SRV-ATTR:host": self.host_of.get(server_id),
                "metadata": dict(self.metadata.get(server_id, {})),
                "links": [{"rel": "self",
                           "href": f"{str(request.base_url).rstrip('/')}/v2.1/servers/"
                                   f"{server_id}"}]}})

        @app.get("/v2.1/os-services")
        async def services(request: Request) -> Response:
            _rec, failed = await self._record(request)
            if failed is not None:
                return failed
            binary = request.query_params.get("binary")
            host = request.query_params.get("host")
            hosts = sorted(self.compute_hosts) if self.compute_hosts is not None else \
                [host] if host else []
            found = [{"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, h)), "binary": "nova-compute",
                      "disabled_reason": None, "host": h, "state": "up",
                      "status": "enabled", "updated_at": "2026-01-01T00:00:00.000000",
                      "forced_down": False, "zone": "nova"}
                     for h in hosts
                     if (host is None or h == host) and binary in (None, "nova-compute")]
            return JSONResponse({"services": found})

        @app.get("/v2.1/flavors/{flavor_id}/os-extra_specs")
        async def extra_specs(flavor_id: str, request: Request) -> Response:
            _rec, failed = await self._record(request)
            if failed is not None:
                return failed
            known = {f.id: f for f in (*self.flavors.values(), DEFAULT_FLAVOR)}
            if flavor_id not in known:
                return JSONResponse({"itemNotFound": {
                    "code": 404, "message": f"Flavor {flavor_id} could not be found."}}, 404)
            return JSONResponse({"extra_specs": dict(known[flavor_id].extra_specs)})

        @app.post("/v2.1/servers/{server_id}/action")
        async def action(server_id: str, request: Request) -> Response:
            rec, failed = await self._record(request)
            if failed is not None:
                return failed
            if self.servers is not None and server_id not in self.servers:
                return JSONResponse({"itemNotFound": {
                    "code": 404, "message": f"Instance {server_id} could not be found."}}, 404)
            body = rec.body
            if isinstance(body, dict) and len(body) == 1 and \
                    next(iter(body)) in ("reboot", "os-stop", "os-start"):
                return self._power_action(server_id, rec)
            reset = body.get("os-resetState") if isinstance(body, dict) else None
            if not isinstance(reset, dict) or reset.get("state") not in ("error", "active"):
                return JSONResponse({"badRequest": {
                    "code": 400, "message": "Invalid input for field/attribute os-resetState."}},
                    400)
            self.states[server_id] = reset["state"]
            self._accept(rec)
            return Response(status_code=202)

    def _power_action(self, server_id: str, rec: Any) -> Response:
        """reboot / os-stop / os-start, checked as Nova's schema and its
        instance-state checks do."""
        (name, arg), = rec.body.items()
        kind: Optional[str] = None
        if name == "reboot":
            kind = arg.get("type") if isinstance(arg, dict) and len(arg) == 1 else None
            if kind not in ("HARD", "SOFT"):
                return JSONResponse({"badRequest": {
                    "code": 400, "message": "Invalid input for field/attribute reboot."}}, 400)
        elif arg is not None:
            return JSONResponse({"badRequest": {
                "code": 400, "message": f"Invalid input for field/attribute {name}."}}, 400)
        verb = {"os-stop": "stop", "os-start": "start"}.get(name, name)
        if self._conflicts > 0:
            self._conflicts -= 1
            return _conflict(verb, server_id, "task_state rebooting_hard")
        task = self.task_states.get(server_id)
        if task:
            return _conflict(verb, server_id, f"task_state {task}")
        state = self.states.get(server_id, "active")
        if state not in ALLOWED_FROM[name]:
            return _conflict(verb, server_id, f"vm_state {state}")
        if name in NEXT_STATE:
            self.states[server_id] = NEXT_STATE[name]
        self.actions.append((server_id, name, kind))
        self._accept(rec)
        return Response(status_code=202)
