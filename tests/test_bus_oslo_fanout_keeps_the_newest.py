"""With [bus] compute_casts = oslo, fanouts to the controllers go one at a
time per method, host and instance (a broker away must not pile stale ones
up); one made while the previous is on its way is held, not dropped, and
sent next, merged with any held before it: a controller always ends with
the newest placement snapshot, and with every instance's change."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from conftest import require_rabbitmq, until

from nfvha.bus import make_bus

pytestmark = pytest.mark.system


class Heard:
    def __init__(self, controller_id: str) -> None:
        self.controller_id = controller_id
        self.got: list[tuple[str, dict[str, Any]]] = []

    def sg_instances(self, **kw: Any) -> None:
        self.got.append(("sg_instances", kw))

    def sg_member_changed(self, **kw: Any) -> None:
        self.got.append(("sg_member_changed", kw))


async def test_a_burst_of_fanouts_ends_with_the_newest_and_misses_no_instance() -> None:
    url = require_rabbitmq()
    prefix = f"nfvha-fanout-{uuid.uuid4().hex[:8]}"
    ctl_bus = make_bus(url, prefix=prefix, compute_casts="oslo")
    agent_bus = make_bus(url, prefix=prefix, compute_casts="oslo")
    heard = Heard("ctl-1")
    await ctl_bus.start()
    await agent_bus.start()
    try:
        await ctl_bus.serve_controller(heard)
        await asyncio.sleep(0.5)  # the fanout queue is bound
        for i in range(30):  # snapshots of one host, made faster than they go out
            await agent_bus.fanout_controller("sg_instances", host="h1",
                                              instances=[f"vm-{j}" for j in range(i + 1)])
        for i in range(10):  # changes of ten instances, two fields in two casts each
            await agent_bus.fanout_controller("sg_member_changed", by="x", uuid=f"u{i}",
                                              heartbeat="failed")
            await agent_bus.fanout_controller("sg_member_changed", by="x", uuid=f"u{i}",
                                              host="h2")
        newest = [f"vm-{j}" for j in range(30)]
        await until(lambda: any(kw["instances"] == newest for m, kw in heard.got
                                if m == "sg_instances"), 20)
        snapshots = [kw["instances"] for m, kw in heard.got if m == "sg_instances"]
        assert snapshots[-1] == newest
        assert [len(s) for s in snapshots] == sorted(len(s) for s in snapshots)  # in order
        print(f"\n30 snapshots made, {len(snapshots)} sent (the rest held and merged)")

        def members() -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for m, kw in heard.got:
                if m == "sg_member_changed":
                    out.setdefault(kw["uuid"], {}).update(kw)
            return out

        await until(lambda: len(members()) == 10
                    and all(v.get("host") == "h2" and v.get("heartbeat") == "failed"
                            for v in members().values()), 20)
    finally:
        await agent_bus.stop()
        await ctl_bus.stop()
