"""Loop protection: whether to act on an instance's fault now. Pure: the
history comes from the store (one `recovery` row per instance) and time is
an argument, so every edge is a plain unit test."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

PAUSED, EXHAUSTED, EXHAUST, WAIT, ACT = "paused", "exhausted", "exhaust", "wait", "act"
# How an "exhaust" decision's reason begins (the sink recognises a resumed one by it)
EXHAUST_REASON = "recovery exhausted now: "


@dataclass(frozen=True)
class Policy:
    max_actions: int = 3         # per instance within window_s
    window_s: float = 3600.0
    min_uptime_s: float = 120.0  # no action sooner than this after the last one


@dataclass(frozen=True)
class History:
    action_times: Tuple[float, ...] = ()   # epoch seconds of issued actions, oldest first
    paused: bool = False
    exhausted: bool = False


@dataclass(frozen=True)
class Decision:
    verdict: str                  # paused | exhausted | exhaust | wait | act
    at: Optional[float] = None    # wait: when to act if the guest is still down
    reason: str = ""


def in_window(policy: Policy, times: Tuple[float, ...], now: float) -> Tuple[float, ...]:
    """The actions that still count at ``now``: those less than window_s ago.
    One stamped in the future (the clock stepped back) counts too."""
    return tuple(t for t in times if now - t < policy.window_s)


def decide(policy: Policy, history: History, now: float) -> Decision:
    if history.paused:
        return Decision(PAUSED, reason="recovery paused by an operator")
    if history.exhausted:
        return Decision(EXHAUSTED, reason="recovery exhausted: re-arm to allow actions again")
    recent = in_window(policy, history.action_times, now)
    if len(recent) >= policy.max_actions:
        # checked before the uptime: waiting would end in the same answer
        return Decision(EXHAUST, reason=f"{EXHAUST_REASON}{len(recent)} actions within "
                                        f"{policy.window_s:g} s (max_actions "
                                        f"{policy.max_actions})")
    if recent:
        # min(): an action stamped in the future (clock stepped back) must
        # not hold recovery off for longer than min_uptime_s from now
        last = min(max(recent), now)
        at = last + policy.min_uptime_s
        if now < at:
            return Decision(WAIT, at=at, reason=f"last action {now - last:.1f} s ago, "
                                                f"min_uptime_s {policy.min_uptime_s:g}")
    return Decision(ACT)


def after_act(policy: Policy, history: History, now: float) -> Tuple[float, ...]:
    """The action times to store once an action is decided at ``now``: the
    ones still in the window, then ``now``."""
    return tuple(sorted((*in_window(policy, history.action_times, now), now)))
