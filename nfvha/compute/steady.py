"""The heartbeat's steady state on a C path: header prediction for guests.

At 1000 guests and 100 ms the compute agent runs ten thousand identical
cycles a second (a challenge out, a healthy answer in), and in Python each
costs tens of microseconds. ``_steady.Steady`` (compute/_steady.c) runs the
host machine's two transitions of that state in C, like TCP's header
prediction: a session whose machine is in the steady state hands it over
(``enter``); every input the C path does not recognise as the expected next
step (any other line, a second line in one read, a partial line, a missed
answer reaching its window of evidence, an action, a disconnect) returns
None there, and the session takes the state back (``leave``) and gives the
very same input to ``nfvha.protocol.host`` — which stays the one definition
of the protocol. What the C path accepts it treats exactly as host.step
would (tests/test_steady_path_agrees_with_the_host_machine.py).

While a session is on the C path its message and byte budgets are not
charged: it accepts at most one answer per challenge there (10 a second at
the fastest interval), far inside both; anything more leaves the path and is
charged as before.

A session on the C path is served by its loop's engine (``_steady.Engine``,
compute/_steadyio.c, driven by compute/steadyloop.py): its timer, the
challenge's send and the answer's read run in C too, so a steady cycle costs
no Python at all; the engine hands the session back for anything else.

The extension is optional (pyproject.toml): without a C compiler nfvha
installs without it and every session stays on the Python machine.
"""
from __future__ import annotations

import functools
from typing import Any

from nfvha.protocol import heartbeat as hb
from nfvha.protocol import host
from nfvha.protocol._state import evolve

try:
    from nfvha.compute import _steady
except ImportError:  # built without a C compiler: the Python machine only
    _steady = None  # type: ignore[assignment]

AVAILABLE = _steady is not None


def unavailable_warning(wanted: bool, available: bool = AVAILABLE) -> str | None:
    """What an agent asked to run the steady path says at start when the
    extension was not built (the fallback is silent otherwise)."""
    if not wanted or available:
        return None
    return ("[heartbeat] steady_path is on but nfvha's C extension "
            "(nfvha.compute._steady) is not built: every heartbeat runs on the "
            "Python machine, about three times the CPU. Install a C compiler and "
            "the Python headers, then reinstall nfvha")


if _steady is not None:
    _steady.configure(version=hb.VERSION, revision=hb.REVISION, nonce_max=host.NONCE_MAX,
                      log_msg_max=hb.LOG_MSG_MAX,
                      rtt_samples_before_adapting=host.RTT_SAMPLES_BEFORE_ADAPTING,
                      max_msg=hb.MAX_MSG, corrective_actions=hb.CORRECTIVE_ACTIONS)


def eligible(state: host.HostState) -> bool:
    """Whether the machine is in the steady state: enabled and healthy, the
    last challenge answered on time, nothing pending, nothing learnt from an
    extension or a miss still in play."""
    return (state.answered and state.phase == host.ENABLED and state.connected
            and state.health == "healthy" and state.action is None and not state.starved
            and state.misses == 0 and state.extended_streak == 0 and state.extended_ms == 0.0
            and not state.lag_extended and state.baseline is None and state.origin is None
            and state.registration is not None and state.deadline is not None)


def enter(state: host.HostState) -> Any:
    """The C object carrying ``state`` on (``eligible(state)`` must hold)."""
    assert _steady is not None
    return _steady.Steady(state, functools.partial(host.prf_block, state.nonce_seed))


def leave(state: host.HostState, fast: Any) -> host.HostState:
    """``state`` as the C path left it: what the Python machine goes on from."""
    return evolve(state, **fast.export())
