"""Bad server-group requests on the bus (a buggy or old compute agent, a
confused controller) are refused with a clear error, never raise, and
never reach a guest."""
from __future__ import annotations

from pathlib import Path

from conftest import CastRecorder

from nfvha.compute.messaging import ComputeEndpoint
from nfvha.controller.servergroup_service import ServerGroupService


async def test_controller_refuses_malformed_requests() -> None:
    bus = CastRecorder()
    svc = ServerGroupService(bus)
    svc.groups.set_group("g", "", ["a", "b"])
    await svc.sg_instances("h1", ["a"])
    await svc.sg_instances("h2", ["b"])
    bad = [
        svc.sg_broadcast("h1", "a", 42),
        svc.sg_broadcast("h1", "a", "x" * 3051),
        svc.sg_broadcast("h1", "a", "two\nlines"),
        svc.sg_broadcast("", "a", "hi"),
        svc.sg_broadcast("h1", None, "hi"),
        svc.sg_broadcast("h1", "n" * 300, "hi"),
        svc.sg_status_query("h1", "a", -1),
        svc.sg_status_query("h1", "a", "7"),
        svc.sg_status_query("h1", "a", True),
        svc.sg_status_query("h1", "a", 2**31),
        svc.sg_instances("h1", "a"),
        svc.sg_instances(None, ["a"]),
    ]
    for coro in bad:
        res = await coro
        assert res["ok"] is False and res["error"], res
    assert bus.casts == []
    assert svc.counters["refused"] == len(bad)
    # junk Nova notifications are dropped with a count, never raised
    await svc.on_nova_notification({"event_type": "compute.instance.update", "payload": 5})
    await svc.on_nova_notification({"payload": {}})
    assert svc.counters["refused"] == len(bad) + 2 and bus.casts == []
    # and good ones still work afterwards
    assert (await svc.sg_broadcast("h1", "a", "hi"))["ok"]
    assert bus.casts == [("h2", "sg_deliver", {"instances": ["b"], "messages": [
        {"version": 2, "msg_type": "broadcast", "source_instance": "a", "data": "hi"}]})]


async def test_compute_endpoint_refuses_what_is_not_for_guests(sock_dir: Path) -> None:
    class _Channels:
        host = "h1"

        def __init__(self) -> None:
            self.calls: list = []

        def deliver(self, instances, messages):
            self.calls.append((instances, messages))
            return {"delivered": len(instances) * len(messages), "dropped": 0}

    ch = _Channels()
    ep = ComputeEndpoint(ch)  # type: ignore[arg-type]
    for instances, messages in [
        ("a", [{"msg_type": "broadcast"}]),
        ([1], [{"msg_type": "broadcast"}]),
        (["a"], {"msg_type": "broadcast"}),
        (["a"], [{"msg_type": "status_query", "seq": 1}]),  # guest→host type: never sent down
        (["a"], [{"msg_type": "heartbeat"}]),
        (["a"], ["text"]),
    ]:
        res = await ep.sg_deliver(instances, messages)
        assert res["ok"] is False, (instances, messages)
    assert (await ep.sg_deliver_hosts("h1", []))["ok"] is False
    assert ch.calls == []
    ok = await ep.sg_deliver_hosts({"h2": ["b"], "h1": ["a"]}, [{"msg_type": "notification",
                                                                "version": 2, "data": {}}])
    assert ok["ok"] and ch.calls == [(["a"], [{"msg_type": "notification", "version": 2,
                                               "data": {}}])]
