"""What the REST API accepts, and how it refuses the rest (issue 13).

- Request bodies: at most ``[api] max_body_bytes`` (FastAPI's own limit:
  413, counted as the bytes arrive, so a 10 MB body is never held).
- JSON bodies are parsed strictly (``StrictJSONRoute``): NaN and
  infinities, numbers too large for a float, integers beyond 64 bits, lone
  surrogates and nesting deeper than ``MAX_DEPTH`` are a 400 that says
  which, never a 500 later when a response or the store cannot encode them.
- A request that fails validation (422) keeps nothing alive: FastAPI raises
  its ``RequestValidationError`` from a frame that holds it, a cycle that
  keeps the whole parsed body until a full collection, which the tuned
  collector (nfvha/gctune.py) rarely runs. ``validation_error_handler``
  breaks the cycle (traceback and body dropped) and answers with the
  offending inputs cut short.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, Optional

from fastapi import HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

MAX_DEPTH = 32
MAX_INPUT_SHOWN = 200  # characters of an offending value echoed in a 422
INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class ApiLimits:
    """[api] and [servergroup] bounds (nfvha/conf); the defaults are the
    options' defaults, for apps built without a config (tests, demo)."""

    max_body_bytes: int = 1024 * 1024
    max_list: int = 10000  # largest page a list endpoint serves
    max_server_groups: int = 1000
    max_group_members: int = 100
    max_name_length: int = 255

    @classmethod
    def from_conf(cls, conf: Any) -> ApiLimits:
        if conf is None:
            return cls()
        return cls(max_body_bytes=conf.api.max_body_bytes, max_list=conf.api.max_list,
                   max_server_groups=conf.servergroup.max_groups,
                   max_group_members=conf.servergroup.max_members,
                   max_name_length=conf.servergroup.max_name_length)


class BadJSON(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a number JSON allows")


def _check(value: Any, depth: int = 0) -> None:
    """What json.loads lets through: lone surrogates (valid JSON escapes, not
    text), numbers too large for a float (1e999 parses as inf), integers
    beyond 64 bits. A walk after parsing costs less than a Python hook per
    number while parsing."""
    if depth > MAX_DEPTH:
        raise BadJSON(f"nested deeper than {MAX_DEPTH}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadJSON("a string holds a lone surrogate (\\ud800-\\udfff): not text") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadJSON("a number is too large for a float")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64[0] <= value <= INT64[1]:
            raise BadJSON("an integer is beyond 64 bits")
    elif isinstance(value, list):
        for v in value:
            _check(v, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check(k, depth + 1)
            _check(v, depth + 1)


def strict_loads(body: bytes) -> Any:
    """JSON that nfvha can store and show again, or BadJSON / JSONDecodeError."""
    try:
        # an integer of more than 4300 digits is a ValueError of json.loads itself
        value = json.loads(body, parse_constant=_no_constant)
    except RecursionError:  # the C decoder stops at the recursion limit, cheaply
        raise BadJSON(f"nested deeper than {MAX_DEPTH}") from None
    _check(value)
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = strict_loads(body)
            except BadJSON as exc:
                raise HTTPException(400, f"request body: {exc}") from None
            except json.JSONDecodeError as exc:
                # FastAPI's 422 json_invalid, without the body on the error
                raise HTTPException(422, [{
                    "type": "json_invalid", "loc": ["body", exc.pos],
                    "msg": "JSON decode error", "input": {}, "ctx": {"error": exc.msg}}],
                ) from None
            except (ValueError, RecursionError) as exc:  # not UTF-8, ...
                raise HTTPException(400, f"request body is not JSON: {exc}"[:300]) from None
        return self._json


class StrictJSONRoute(APIRoute):
    """APIRoute whose JSON bodies go through ``strict_loads``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


def _short(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return value if len(text) <= MAX_INPUT_SHOWN else text[:MAX_INPUT_SHOWN] + "..."
    if isinstance(value, str) and len(value) > MAX_INPUT_SHOWN:
        return value[:MAX_INPUT_SHOWN] + "..."
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        err = dict(err)
        if "input" in err:
            err["input"] = _short(err["input"])
        errors.append(err)
    # break the cycle frame -> error -> traceback -> frame that holds the body
    exc.__traceback__ = None
    exc.__context__ = exc.__cause__ = None
    if hasattr(exc, "body"):
        exc.body = None  # type: ignore[misc]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def page(items: list[dict[str, Any]], key: str, limit: Optional[int],
         marker: Optional[str]) -> list[dict[str, Any]]:
    """OpenStack-style paging over a list sorted by ``key``: the items after
    ``marker`` (the last key of the previous page), at most ``limit``. No
    limit and no marker: everything, as before paging existed."""
    if marker is not None:
        items = [i for i in items if i[key] > marker]
    return items if limit is None else items[:limit]
