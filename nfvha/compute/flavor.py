"""Which nfvha channels a Nova instance asks for, from its flavor or image.

A flavor asks with the extra spec ``hw:nfvha_heartbeat=true`` (and
``hw:nfvha_messaging=true`` for the server-group channel); existing
StarlingX flavors with ``sw:wrs:guest:heartbeat=true`` and
``sw:wrs:srv_grp_messaging=true`` are honoured too. An image asks with the
properties ``hw_nfvha_heartbeat=true`` / ``hw_nfvha_messaging=true``.

Nova's libvirt driver writes only the flavor's *name* into the domain's
metadata, so the extra specs come from the API: "Show Server Details" at
microversion 2.47 or later embeds the flavor with its extra specs (older
clouds: ``GET /flavors/{id}/os-extra_specs``); image properties come from
Glance. openstacksdk is synchronous, so each lookup runs in a worker thread.
Answers are cached per instance (a flavor changes only by a resize, which
restarts the domain and asks again after ``ttl_s``); a cloud that cannot
answer is asked again with backoff for as long as the caller still wants
the answer (the domain still runs).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)

HEARTBEAT_SPECS = ("hw:nfvha_heartbeat", "sw:wrs:guest:heartbeat")
MESSAGING_SPECS = ("hw:nfvha_messaging", "sw:wrs:srv_grp_messaging")
HEARTBEAT_PROP = "hw_nfvha_heartbeat"
MESSAGING_PROP = "hw_nfvha_messaging"


@dataclass(frozen=True)
class Wanted:
    heartbeat: bool = False
    messaging: bool = False


class LookupFailed(Exception):
    """The cloud could not say (unreachable, refused, malformed answer)."""


class NotInCloud(LookupFailed):
    """Nova does not know the instance (404): it is not a Nova instance."""


def _true(value: Any) -> bool:
    # Nova and Glance keep every extra spec and property as a string;
    # StarlingX flavors write "True".
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on")


def wanted(extra_specs: Any, image_properties: Any = None) -> Wanted:
    """The channels asked for by a flavor's extra specs and an image's
    properties (either may be missing or malformed: then it asks nothing)."""
    specs = extra_specs if isinstance(extra_specs, dict) else {}
    props = image_properties if isinstance(image_properties, dict) else {}
    return Wanted(
        heartbeat=any(_true(specs.get(k)) for k in HEARTBEAT_SPECS)
        or _true(props.get(HEARTBEAT_PROP)),
        messaging=any(_true(specs.get(k)) for k in MESSAGING_SPECS)
        or _true(props.get(MESSAGING_PROP)))


class ChannelRequests:
    """Looks up (and remembers) what each instance asks for.

    ``connect`` makes an openstacksdk Connection (nfvha's service user on the
    compute host); it is called again after a failure, so a token or
    catalogue problem heals without a restart."""

    def __init__(self, connect: Callable[[], Any], *, ttl_s: float = 300.0,
                 retry_base_s: float = 0.5, retry_max_s: float = 30.0,
                 size: int = 10_000) -> None:
        self._connect = connect
        self._conn: Any = None
        self.ttl_s = ttl_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._size = size
        self._cache: dict[str, tuple[float, Wanted]] = {}
        self.counters = {"lookups": 0, "cached": 0, "failures": 0}

    async def lookup(self, instance_uuid: str, image_id: str | None = None) -> Wanted:
        """One answer, from the cache or the cloud; raises LookupFailed."""
        hit = self._cache.get(instance_uuid)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            self.counters["cached"] += 1
            return hit[1]
        self.counters["lookups"] += 1
        try:
            answer = await asyncio.to_thread(self._ask, instance_uuid, image_id)
        except LookupFailed:
            self.counters["failures"] += 1
            raise
        except Exception as exc:  # keystoneauth errors, SDK errors, bad answers
            self.counters["failures"] += 1
            self._conn = None  # a fresh connection (and token) next time
            raise LookupFailed(f"{type(exc).__name__}: {exc}"[:300]) from exc
        if len(self._cache) >= self._size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[instance_uuid] = (now, answer)
        return answer

    async def lookup_retrying(self, instance_uuid: str, image_id: str | None = None,
                              still_wanted: Callable[[], bool] = lambda: True
                              ) -> Wanted | None:
        """Asks until the cloud answers or ``still_wanted()`` is false (None
        then). An instance Nova does not know asks for nothing."""
        failures = 0
        while still_wanted():
            try:
                return await self.lookup(instance_uuid, image_id)
            except NotInCloud:
                return Wanted()
            except LookupFailed as exc:
                failures += 1
                delay = min(self.retry_max_s, self.retry_base_s * 2 ** min(failures - 1, 10))
                delay *= 0.5 + random.random() / 2
                if failures in (1, 5) or failures % 20 == 0:
                    LOG.warning("instance %s: cannot look up its flavor (%s); asking again "
                                "in %.1f s", instance_uuid, exc, delay)
                await asyncio.sleep(delay)
        return None

    def forget(self, instance_uuid: str) -> None:
        self._cache.pop(instance_uuid, None)

    # -- in a worker thread ------------------------------------------------------------
    def _ask(self, instance_uuid: str, image_id: str | None) -> Wanted:
        from openstack import exceptions as sdk_exc

        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        try:
            server = conn.compute.get_server(instance_uuid)
        except sdk_exc.NotFoundException as exc:
            raise NotInCloud(f"Nova does not know {instance_uuid}") from exc
        flavor = server.flavor  # the SDK gives a Flavor resource (a dict from old SDKs)
        field = flavor.get if isinstance(flavor, dict) else (
            lambda key: getattr(flavor, key, None))
        specs = field("extra_specs")
        # embedded (2.47+) flavors carry original_name; older ones only an id
        if field("original_name") is None and field("id"):
            # a cloud older than microversion 2.47: the flavor by its id
            specs = conn.compute.fetch_flavor_extra_specs(field("id")).extra_specs
        props: dict[str, Any] = {}
        image = image_id or (server.image.get("id") if isinstance(server.image, dict)
                             else None)
        if image:
            try:
                img = conn.image.get_image(image)
                props = dict(img.properties or {})
                # Glance returns extra properties at the top level; the SDK
                # keeps unknown ones in .properties, known hw_* ones as fields
                for key in (HEARTBEAT_PROP, MESSAGING_PROP):
                    if getattr(img, key, None) is not None:
                        props[key] = getattr(img, key)
            except sdk_exc.NotFoundException:
                props = {}  # image deleted since: the flavor alone decides
            except Exception as exc:  # no image service in the catalogue, Glance down
                # the flavor still decides; asking again would block a flavor
                # that does ask for channels behind an image service we lack
                LOG.info("instance %s: image %s properties not read (%s): the flavor "
                         "decides", instance_uuid, image, exc)
        return wanted(specs, props)
