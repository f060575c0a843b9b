"""Votes and notices driven by the host machine (StarlingX action_notify /
action_response), with a fake clock: one action at a time, the guest's
answer or the deadline ends it, nothing the guest sends can end someone
else's action, and every way the channel goes away ends it too."""
from __future__ import annotations

import pytest
from test_host_machine_edges import Drive, init_msg

from nfvha.protocol import heartbeat as hb
from nfvha.protocol.host import (
    ActionResult,
    Connected,
    Disconnected,
    NotifyAction,
    Received,
    Send,
    Tick,
    Violation,
)


def answer(notify: dict, result: str, **over: object) -> Received:
    fields = {"invocation_id": notify["invocation_id"], "event_type": notify["event_type"],
              "notification_type": notify["notification_type"], "vote_result": result,
              "log_msg": "", **over}
    return Received(hb.build_action_response(sequence=9, **fields))  # type: ignore[arg-type]


def notify(d: Drive, event: str = "stop", kind: str = "revocable",
           timeout_ms: int | None = None, at: float = 0.01) -> dict:
    out = d.feed(NotifyAction(event, kind, timeout_ms), at=at)
    (msg,) = [o.msg for o in out if isinstance(o, Send)]
    assert msg["msg_type"] == "action_notify" and hb.validate(msg) is None
    return msg


def test_a_vote_is_sent_and_the_guests_answer_is_its_result() -> None:
    d = Drive().registered()
    msg = notify(d, "live_migrate_begin")
    assert msg["timeout_ms"] == 8000  # the registered vote_secs
    assert d.feed(answer(msg, "reject", log_msg="busy"), at=0.2) == [
        ActionResult("live_migrate_begin", "revocable", "reject", "busy")]
    assert d.state.action is None
    # heartbeating went on meanwhile
    assert d.state.phase == "enabled"


def test_notice_times_follow_the_registration_and_a_notice_cannot_be_refused() -> None:
    d = Drive()
    d.feed(Connected())
    d.feed(Received(hb.build_init(sequence=1, invocation_id=3, name="vm",
                                  heartbeat_interval_ms=250, corrective_action="reboot",
                                  vote_secs=4, shutdown_notice_secs=6, suspend_notice_secs=7,
                                  resume_notice_secs=11, restart_secs=300)))
    for event, secs in (("reboot", 6), ("pause", 7), ("unpause", 11), ("resize_begin", 300)):
        msg = notify(d, event, "irrevocable", at=d.now + 0.01)
        assert msg["timeout_ms"] == secs * 1000
        assert d.feed(answer(msg, "reject"), at=d.now + 0.01) == [
            ActionResult(event, "irrevocable", "complete", "reject ignored for a notice")]
    assert notify(d, "stop", at=d.now + 0.01)["timeout_ms"] == 4000


def test_no_answer_by_the_deadline_is_a_timeout_and_a_late_answer_a_violation() -> None:
    d = Drive().registered()
    msg = notify(d, "reboot", timeout_ms=600)
    out = d.run_until(0.7)
    assert [o for o in out if isinstance(o, ActionResult)] == [
        ActionResult("reboot", "revocable", "timeout", "the guest did not answer in time")]
    assert d.feed(answer(msg, "accept"), at=0.75) == [
        Violation("action_response with no action pending")]


def test_the_deadline_is_the_earlier_of_challenge_and_action() -> None:
    d = Drive().registered(interval_ms=1000)
    notify(d, "reboot", timeout_ms=300, at=0.0)
    assert d.deadline == pytest.approx(0.3)
    out = d.feed(Tick(), at=0.3)
    assert [type(o) for o in out] == [ActionResult]  # the challenge is not due yet
    assert d.state.deadline == pytest.approx(1.0)


def test_one_action_at_a_time_and_only_an_enabled_guest_is_asked() -> None:
    d = Drive().registered()
    first = notify(d, "stop")
    assert d.feed(NotifyAction("reboot"), at=0.02) == [
        ActionResult("reboot", "revocable", "error", "stop is still pending")]
    assert d.state.action is not None and d.state.action.invocation_id == first["invocation_id"]
    idle = Drive()
    idle.feed(Connected())
    assert idle.feed(NotifyAction("stop")) == [
        ActionResult("stop", "revocable", "unknown", "no enabled guest to ask (heartbeat waiting)")]
    assert idle.sent == []
    for bad, why in ((NotifyAction("explode"), "unknown event type 'explode'"),
                     (NotifyAction("stop", "maybe"), "unknown notification type 'maybe'"),
                     (NotifyAction("stop", timeout_ms=0), "timeout_ms out of range: 0")):
        (res,) = Drive().registered().feed(bad, at=0.01)
        assert (res.result, res.log_msg) == ("error", why)


def test_answers_that_do_not_match_the_pending_action_do_not_end_it() -> None:
    d = Drive().registered()
    msg = notify(d, "stop")
    for wrong in ({"invocation_id": msg["invocation_id"] + 1}, {"event_type": "reboot"},
                  {"notification_type": "irrevocable"}):
        out = d.feed(answer(msg, "accept", **wrong), at=d.now + 0.001)
        assert out == [Violation("action_response does not match the pending action")]
        assert d.state.action is not None
    assert d.feed(answer(msg, "accept"), at=d.now + 0.001) == [
        ActionResult("stop", "revocable", "accept", "")]


@pytest.mark.parametrize("event,why", [
    (Disconnected(), "heartbeat channel closed"),
    (Connected(), "heartbeat channel reconnected"),
    (Received(hb.build_exit(sequence=5)), "the guest agent exited"),
    (Received(init_msg(invocation_id=99)), "the guest registered again"),
])
def test_the_channel_going_away_ends_the_action_as_unknown(event: object, why: str) -> None:
    d = Drive().registered()
    notify(d, "stop")
    out = d.feed(event, at=0.05)
    assert ActionResult("stop", "revocable", "unknown", why) in out
    assert d.state.action is None
