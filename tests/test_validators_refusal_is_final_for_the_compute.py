"""A fault the controller refuses as malformed is final for the compute
agent's outbox: dropped after the one refusal (counted, logged once, set
aside in the spool so a restarted agent does not resend it), while a good
fault beside it is delivered and a failing controller is still retried."""
from __future__ import annotations

import asyncio
import logging

from conftest import until

from nfvha.bus import make_bus
from nfvha.compute.outbox import FaultOutbox
from nfvha.controller import Controller
from tests.test_controller_helpers import fault


def invalid_faults(ctl: Controller) -> float:
    return ctl.metrics.invalid.labels("fault")._value.get()


async def test_a_refused_fault_is_dropped_not_retried(tmp_path, caplog):
    ctl = Controller(f"sqlite:///{tmp_path}/c.sqlite", [], agent_down_after_s=0)
    await ctl.start()
    bus = make_bus("inproc://")
    await bus.start()
    await bus.serve_controller(ctl)
    spool = tmp_path / "spool"

    async def send(event: dict) -> object:
        return await bus.call_controller("fault", event=event)

    box = FaultOutbox(send, backoff_base_s=0.01, backoff_max_s=0.02, spool_dir=spool)
    box.start()
    caplog.set_level(logging.WARNING, logger="nfvha.compute.outbox")
    try:
        bad = fault(detected_at="0001-01-01T00:00:00+01:00")  # OverflowError before issue 13
        good = fault()
        box.put(bad)
        box.put(good)
        await asyncio.wait_for(box.wait_delivered(good["id"]), 10)
        await asyncio.wait_for(box.wait_delivered(bad["id"]), 10)
        await asyncio.sleep(0.5)  # 25 retries' worth at this backoff, had it retried
        assert box.pending == 0 and box.delivered == 1 and box.refused == 1
        assert invalid_faults(ctl) == 1  # one call, one refusal
        assert [e["id"] for e in await ctl.list_events()] == [good["id"]]
        said = [r for r in caplog.records if bad["id"] in r.getMessage()]
        assert len(said) == 1 and "refused" in said[0].getMessage()
        assert "detected_at" in said[0].getMessage()  # the controller's reason
        assert not (spool / f"{bad['id']}.json").exists()
        assert (spool / f"{bad['id']}.refused").exists()
    finally:
        await box.stop()

    # a restarted agent on the same spool does not send it again
    again = FaultOutbox(send, backoff_base_s=0.01, spool_dir=spool)
    again.start()
    try:
        assert again.pending == 0
    finally:
        await again.stop()
        await bus.stop()
        await ctl.stop()
    assert invalid_faults(ctl) == 1


async def test_a_failing_controller_is_still_retried():
    calls = []

    async def send(event: dict) -> object:
        calls.append(event["id"])
        if len(calls) < 3:
            raise RuntimeError("store restarting")  # not a refusal: retried
        if len(calls) == 3:
            return {"ok": False}  # no reason given: not a refusal either
        return {"ok": True, "id": event["id"]}

    box = FaultOutbox(send, backoff_base_s=0.01, backoff_max_s=0.02)
    box.start()
    try:
        box.put({"id": "e1"})
        await until(lambda: box.delivered == 1)
        assert calls == ["e1"] * 4 and box.refused == 0
    finally:
        await box.stop()
