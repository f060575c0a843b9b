"""Who may use the REST API.

``noauth`` (the default): whoever reaches the port; the embedded default
listens on 127.0.0.1 only.

``keystone``: a request that changes state (POST, PUT, PATCH, DELETE: votes
and notices to guests, server groups, retiring hosts) and, with
``[api] protect_reads``, every ``/v1`` read, must carry an ``X-Auth-Token``
that Keystone validates (Identity v3 "Validate and show information for
token": ``GET /v3/auth/tokens`` with the token in ``X-Subject-Token``, asked
with nfvha's own service token) and whose roles include one of
``[api] admin_roles``. Keystone's answer is remembered for
``token_cache_s`` (never past the token's expiry), so a burst of calls
costs one validation; a refused token is remembered for a few seconds, so
a client retrying a bad one cannot hammer Keystone.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from openstack.connection import Connection

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_TOKEN = 8192          # Fernet tokens are ~200 bytes, PKI ones a few kB
REFUSED_CACHE_S = 5.0


class Denied(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class KeystoneTokens:
    def __init__(self, conn: Callable[[], Connection], roles: Iterable[str],
                 cache_s: float = 60.0, max_cached: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._source = conn
        self._conn: Optional[Connection] = None
        self.roles = frozenset(roles)
        self.cache_s = cache_s
        self.max_cached = max_cached
        self._clock = clock
        # token -> (valid until, token info, or the reason Keystone refused it)
        self._cache: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.validations = 0      # calls made to Keystone

    async def check(self, token: Optional[str]) -> dict[str, Any]:
        """The token's info if it may act; Denied(401/403/503) if not."""
        if not token:
            raise Denied(401, "X-Auth-Token required")
        if len(token) > MAX_TOKEN:
            raise Denied(401, "X-Auth-Token too long")
        now = self._clock()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            found = hit[1]
        else:
            try:
                info = await asyncio.to_thread(self._validate, token)
            except Denied as exc:
                if exc.status == 401:
                    self._remember(token, now + REFUSED_CACHE_S, exc.reason)
                raise
            self._remember(token, now + self._lifetime(info), info)
            found = info
        if isinstance(found, str):
            raise Denied(401, found)
        names = {r.get("name") for r in found.get("roles") or [] if isinstance(r, dict)}
        if not names & self.roles:
            raise Denied(403, f"token holds none of the roles {sorted(self.roles)}")
        return found

    def _lifetime(self, info: dict[str, Any]) -> float:
        expires = info.get("expires_at")
        try:
            left = (datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
                    - datetime.now(timezone.utc)).total_seconds()
        except (ValueError, TypeError):  # no or naive expiry: the cache time alone
            left = self.cache_s
        return max(0.0, min(self.cache_s, left))

    def _remember(self, token: str, until: float, what: Any) -> None:
        self._cache[token] = (until, what)
        self._cache.move_to_end(token)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    def _validate(self, token: str) -> dict[str, Any]:
        """Blocking (keystoneauth): run in a worker thread."""
        self.validations += 1
        try:
            if self._conn is None:
                self._conn = self._source()
            session = self._conn.session
            base = str(session.auth.auth_url).rstrip("/")
            url = (base if base.endswith("/v3") else base + "/v3") + "/auth/tokens"
            r = session.get(url, headers={"X-Subject-Token": token}, raise_exc=False)
        except Exception as exc:  # no such cloud, Keystone unreachable, our login refused
            raise Denied(503, f"cannot validate the token: {type(exc).__name__}") from exc
        if r.status_code in (401, 404):
            raise Denied(401, "token not valid")
        if r.status_code != 200:
            raise Denied(503, f"cannot validate the token: Keystone answered "
                              f"{r.status_code}")
        try:
            info = r.json()["token"]
            if not isinstance(info, dict):
                raise TypeError("token is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise Denied(503, "cannot validate the token: unexpected answer") from exc
        return info


def protect(app: FastAPI, tokens: KeystoneTokens, protect_reads: bool = False) -> None:
    """Require a valid token on the requests `protect_reads` says."""

    @app.middleware("http")
    async def keystone_auth(request: Request, call_next: Any) -> Any:
        path = request.url.path
        needs = request.method in MUTATING or (protect_reads and path.startswith("/v1"))
        if needs:
            try:
                await tokens.check(request.headers.get("x-auth-token"))
            except Denied as exc:
                headers = ({"WWW-Authenticate": 'Keystone uri="identity"'}
                           if exc.status == 401 else None)
                return JSONResponse({"detail": exc.reason}, exc.status, headers=headers)
        return await call_next(request)
