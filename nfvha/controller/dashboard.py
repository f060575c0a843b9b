"""The controller's dashboard: one page (GET /dashboard) that polls the
REST API and shows hosts, instances (problems first), recent fault events
with their deliveries, and server groups. Static files only: the page is
a client of the same API an operator's tools use.

Guest-supplied text (names, details) is untrusted: the script writes it
as text, never markup, and the Content-Security-Policy lets the page run
only its own script. With `[api] protect_reads` the page asks for a Keystone
token and keeps it in the tab's session storage (dashboard.js).
"""
from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

_FILES = {"dashboard.html": "text/html; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("nfvha.controller").joinpath("static", name).read_bytes()


def dashboard_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = {name: _read(name) for name in _FILES}   # read once: a few kB

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @router.get("/dashboard")
    async def page() -> Response:
        return Response(files["dashboard.html"], media_type=_FILES["dashboard.html"],
                        headers=_HEADERS)

    @router.get("/dashboard/{name}")
    async def asset(name: str) -> Response:
        if name not in files or name == "dashboard.html":
            return Response(status_code=404)
        return Response(files[name], media_type=_FILES[name], headers=_HEADERS)

    return router
