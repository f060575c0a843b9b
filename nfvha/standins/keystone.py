"""Stand-in for Keystone (OpenStack Identity v3), just enough for a client to
log in with a password and find service endpoints in the catalog.

Follows its published API (Identity API v3, "Password authentication with
scoped authorization": https://docs.openstack.org/api-ref/identity/v3/#password-authentication-with-scoped-authorization):
``POST /v3/auth/tokens`` answers 201 with the token in the
``X-Subject-Token`` header and ``{"token": {..., "catalog": [...]}}`` in the
body, 401 for a wrong password; ``GET /v3/auth/tokens`` ("Validate and show
information for token": the caller's token in ``X-Auth-Token``, the one to
check in ``X-Subject-Token``) answers 200 with the token's body, 401 if the
caller's token is not valid, 404 if the subject token is not; ``GET /`` and
``GET /v3`` serve the version documents keystoneauth's discovery reads.
"""
from __future__ import annotations

import uuid
from collections.abc import KeysView
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from nfvha.standins._http import Standin


def _v3(base: str) -> dict[str, Any]:
    return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{base}/v3/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.identity-v3+json"}]}


def _unauthorized() -> JSONResponse:
    return JSONResponse({"error": {"code": 401, "title": "Unauthorized",
                                   "message": "The request you have made requires "
                                   "authentication."}}, 401)


class KeystoneStandin(Standin):
    title = "Keystone stand-in"

    def __init__(self, users: dict[str, str], catalog: dict[str, str],
                 region: str = "RegionOne",
                 roles: Optional[dict[str, list[str]]] = None) -> None:
        self.users = users            # user name → password
        self.catalog = catalog        # service type → endpoint URL
        self.region = region
        self.roles = roles or {}      # user name → role names (default: admin)
        self.issued: dict[str, dict[str, Any]] = {}   # token → its body
        super().__init__()

    @property
    def tokens(self) -> KeysView[str]:
        """The tokens Keystone would accept now."""
        return self.issued.keys()

    def revoke(self, token: str) -> None:
        self.issued.pop(token, None)

    def _catalog(self) -> list[dict[str, Any]]:
        return [{"type": stype, "name": stype, "id": uuid.uuid5(uuid.NAMESPACE_URL, url).hex,
                 "endpoints": [{"id": uuid.uuid5(uuid.NAMESPACE_URL, url + i).hex,
                                "interface": i, "region": self.region,
                                "region_id": self.region, "url": url}
                               for i in ("public", "internal", "admin")]}
                for stype, url in self.catalog.items()]

    def _routes(self) -> None:
        app = self.app

        @app.get("/")
        async def versions(request: Request) -> dict[str, Any]:
            return {"versions": {"values": [_v3(str(request.base_url).rstrip("/"))]}}

        @app.get("/v3")
        @app.get("/v3/")
        async def version(request: Request) -> dict[str, Any]:
            return {"version": _v3(str(request.base_url).rstrip("/"))}

        @app.post("/v3/auth/tokens")
        async def tokens(request: Request) -> Response:
            rec, failed = await self._record(request)
            if failed is not None:
                return failed
            try:
                ident = rec.body["auth"]["identity"]
                user = ident["password"]["user"]
                name, password = user["name"], user["password"]
            except (KeyError, TypeError):
                return JSONResponse({"error": {"code": 400, "title": "Bad Request",
                                               "message": "Expecting password auth"}}, 400)
            if self.users.get(name) != password:
                return _unauthorized()
            token = uuid.uuid4().hex
            now = datetime.now(timezone.utc)
            scope = (rec.body["auth"].get("scope") or {}).get("project") or {}
            body = {"token": {
                "methods": ["password"], "audit_ids": [uuid.uuid4().hex[:22]],
                "issued_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "expires_at": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "user": {"id": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex, "name": name,
                         "domain": {"id": "default", "name": "Default"},
                         "password_expires_at": None},
                "project": {"id": uuid.uuid5(uuid.NAMESPACE_DNS,
                                             scope.get("name", "admin")).hex,
                            "name": scope.get("name", "admin"),
                            "domain": {"id": "default", "name": "Default"}},
                "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_DNS, role).hex, "name": role}
                          for role in self.roles.get(name, ["admin"])],
                "is_domain": False,
                "catalog": self._catalog(),
            }}
            self.issued[token] = body["token"]
            self._accept(rec)
            return JSONResponse(body, 201, headers={"X-Subject-Token": token})

        @app.get("/v3/auth/tokens")
        async def validate(request: Request) -> Response:
            rec, failed = await self._record(request)
            if failed is not None:
                return failed
            if request.headers.get("x-auth-token") not in self.tokens:
                return _unauthorized()
            subject = request.headers.get("x-subject-token", "")
            if subject not in self.issued:
                return JSONResponse({"error": {"code": 404, "title": "Not Found",
                                               "message": "Could not find token: "
                                               f"{subject[:64]}."}}, 404)
            self._accept(rec)
            return JSONResponse({"token": self.issued[subject]}, 200,
                                headers={"X-Subject-Token": subject})
