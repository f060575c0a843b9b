"""The recovery decision (controller/recovery/policy.py) on a fake clock:
paused and exhausted win, max_actions within the window exhausts, an
action too soon after the last waits for min_uptime_s, the window slides,
and re-arming (an empty history) allows actions again."""
from __future__ import annotations

import pytest

from nfvha.controller.recovery.policy import History, Policy, after_act, decide

P = Policy(max_actions=3, window_s=3600.0, min_uptime_s=120.0)
T = 1_000_000.0


def test_a_first_fault_is_acted_on() -> None:
    d = decide(P, History(), T)
    assert (d.verdict, d.at) == ("act", None)


def test_pause_wins_over_everything() -> None:
    d = decide(P, History(action_times=(T - 10,) * 3, paused=True, exhausted=True), T)
    assert d.verdict == "paused" and "paused" in d.reason


def test_exhausted_stays_until_rearmed() -> None:
    # even with no action counted any more (the window long gone)
    assert decide(P, History(action_times=(), exhausted=True), T).verdict == "exhausted"
    assert decide(P, History(), T).verdict == "act"   # re-armed: marks and counts cleared


def test_below_max_actions_acts_and_at_max_exhausts() -> None:
    two = (T - 1000, T - 500)
    assert decide(P, History(action_times=two), T).verdict == "act"
    three = (*two, T - 200)
    d = decide(P, History(action_times=three), T)
    assert d.verdict == "exhaust" and "3 actions within 3600 s" in d.reason


def test_exhaust_is_decided_before_any_wait() -> None:
    d = decide(P, History(action_times=(T - 30, T - 20, T - 10)), T)
    assert d.verdict == "exhaust"


def test_too_soon_after_the_last_action_waits_until_min_uptime() -> None:
    d = decide(P, History(action_times=(T - 30,)), T)
    assert d.verdict == "wait" and d.at == T - 30 + 120.0
    assert decide(P, History(action_times=(T - 30,)), T + 89.999).verdict == "wait"
    assert decide(P, History(action_times=(T - 30,)), T + 90).verdict == "act"  # exactly then


def test_the_window_slides() -> None:
    times = (T - 3600.0, T - 1800, T - 900)    # the first is exactly window_s ago: out
    assert decide(P, History(action_times=times), T).verdict == "act"
    assert decide(P, History(action_times=times), T - 0.001).verdict == "exhaust"


def test_an_action_stamped_in_the_future_holds_off_for_min_uptime_from_now() -> None:
    # the controller's clock stepped back an hour after the last action
    d = decide(P, History(action_times=(T + 3600,)), T)
    assert d.verdict == "wait" and d.at == T + 120.0


@pytest.mark.parametrize("max_actions", [1, 2, 5])
def test_exactly_max_actions_then_exhaust(max_actions: int) -> None:
    pol = Policy(max_actions=max_actions, window_s=3600, min_uptime_s=60)
    hist, now, verdicts = History(), T, []
    for _ in range(max_actions + 2):
        d = decide(pol, hist, now)
        verdicts.append(d.verdict)
        if d.verdict == "act":
            hist = History(action_times=after_act(pol, hist, now))
        elif d.verdict == "exhaust":
            hist = History(action_times=hist.action_times, exhausted=True)
        now += 61  # the guest fails again just after each min_uptime
    assert verdicts == ["act"] * max_actions + ["exhaust", "exhausted"]


def test_after_act_drops_what_left_the_window() -> None:
    h = History(action_times=(T - 4000, T - 100))
    assert after_act(P, h, T) == (T - 100, T)
