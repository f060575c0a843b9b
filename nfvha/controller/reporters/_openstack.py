"""openstacksdk glue shared by the Masakari and Nova sinks.

openstacksdk is synchronous (requests): each call runs in a worker thread so
the event loop never waits on it, and several calls run in parallel.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar, Union

import openstack
from openstack import exceptions as sdk_exc
from openstack.connection import Connection

from nfvha.controller.reporters import Reject, Retry

T = TypeVar("T")
ConnectionSource = Union[Connection, Callable[[], Connection]]


def connect(**kwargs: Any) -> Connection:
    """``openstack.connect`` without reading clouds.yaml/env unless asked.

    Real cloud: ``connect(cloud="mycloud")`` or auth kwargs.  Without Keystone
    (stand-ins, standalone Masakari): ``connect(auth_type="none",
    auth={"endpoint": url}, instance_ha_endpoint_override=url + "/v1")``.
    """
    kwargs.setdefault("load_yaml_config", "cloud" in kwargs)
    kwargs.setdefault("load_envvars", "cloud" in kwargs)
    return openstack.connect(**kwargs)


class SdkSink:
    def __init__(self, conn: ConnectionSource, final_statuses: frozenset[int]) -> None:
        self._source = conn
        self._conn: Connection | None = conn if isinstance(conn, Connection) else None
        self._final = final_statuses

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._source()  # type: ignore[operator]
        return self._conn

    async def _call(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            return fn(self._connection())

        try:
            return await asyncio.to_thread(run)
        except sdk_exc.HttpException as exc:
            status = exc.status_code or 0
            text = f"HTTP {status}: {exc.details or exc.message}"[:300]
            if status in self._final:
                raise Reject(text) from exc
            raise Retry(text) from exc
        except Exception as exc:  # keystoneauth ConnectFailure, SDKException, ...
            raise Retry(f"{type(exc).__name__}: {exc}"[:300]) from exc

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)


class ProjectLookup(SdkSink):
    """An instance's project (tenant) id from Nova's "Show Server Details",
    remembered: it never changes for the life of a server."""

    def __init__(self, conn: ConnectionSource, size: int = 10_000) -> None:
        super().__init__(conn, frozenset({404}))
        self._known: dict[str, str] = {}
        self._size = size

    async def __call__(self, instance_uuid: str) -> str:
        project = self._known.get(instance_uuid)
        if project is None:
            server = await self._call(lambda c: c.compute.get_server(instance_uuid))
            project = str(server.project_id)
            if len(self._known) >= self._size:
                self._known.pop(next(iter(self._known)))
            self._known[instance_uuid] = project
        return project
