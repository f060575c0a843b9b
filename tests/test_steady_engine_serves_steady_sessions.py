"""The C engine (compute/_steadyio.c) runs steady sessions over real sockets:
it sends each due challenge (the very bytes the Python machine would send),
takes the expected answer in its epoll pass, and hands a session back to
Python, with what it read or could not send, on anything else; sockets not
on the engine are left for the Python transport, unread. One guest's
hostile input never costs a neighbour its answer."""
from __future__ import annotations

import gc
import random
import select
import socket
import time
import weakref
from typing import Any

import pytest
from conftest import StubController, answer_msg, missing, steady_state, until

from nfvha.bus import make_bus
from nfvha.compute import steady
from nfvha.compute.agent import ComputeAgent
from nfvha.compute.simguest import Simulator
from nfvha.protocol import host
from nfvha.protocol.framing import encode

TICK, WRITE, READ = 0, 1, 3


@pytest.fixture(autouse=True)
def _built() -> None:
    if not steady.AVAILABLE:
        missing("the C steady path is not built (pip install -e . with a C compiler)")


class Guest:
    """One steady session on the engine, over a socketpair."""

    def __init__(self, engine: Any, ep: select.epoll, seed: int, t0: float) -> None:
        self.host, self.peer = socket.socketpair()
        self.host.setblocking(False)
        self.peer.setblocking(False)
        self.state, self.now = steady_state(seed, [2.0, 3.0], t0=t0)
        self.fast = steady.enter(self.state)
        self.rtt: list[float] = []
        self.late: list[float] = []
        self.counters = {"bytes_in": 0}
        engine.add(self.fast, self.host.fileno(), self, self.counters, self.rtt.append,
                   self.late.append)
        ep.register(self.host.fileno(), select.EPOLLIN)

    @property
    def machine(self) -> host.HostState:
        return steady.leave(self.state, self.fast)

    def received(self) -> bytes:
        try:
            return self.peer.recv(65536)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        self.host.close()
        self.peer.close()


@pytest.fixture
def engine() -> Any:
    assert steady._steady is not None
    return steady._steady.Engine(4096)


@pytest.fixture
def ep():
    ep = select.epoll()
    yield ep
    ep.close()


@pytest.fixture
def guests(engine, ep):
    made: list[Guest] = []

    def make(seed: int = 1, t0: float | None = None) -> Guest:
        g = Guest(engine, ep, seed, time.monotonic() - 1.0 if t0 is None else t0)
        made.append(g)
        return g

    yield make
    for g in made:
        engine.discard(g.fast)
        g.close()


def challenged(engine: Any, g: Guest) -> float:
    """Fire g's challenge (now: its deadline) and drop it at the guest; the time."""
    now = time.monotonic()
    assert g.fast.next_at <= now
    assert engine.fire(now) == []
    assert g.received().startswith(b"\n{")
    return now


def test_a_due_challenge_goes_out_as_the_python_machine_would_send_it(engine, guests):
    g = guests(t0=1000.0)
    deadline = g.fast.next_at
    assert deadline == g.state.deadline
    assert engine.fire(deadline - 0.010) == []  # not due: nothing sent
    assert g.received() == b"" and g.late == []
    now = deadline + 0.002
    want, outputs, next_at = host.step(g.state, host.Tick(), now)
    assert engine.fire(now) == []
    assert g.received() == encode(outputs[0].msg)
    assert g.machine == want
    assert g.fast.next_at == next_at == engine.next_at
    assert g.late == [pytest.approx(2.0)]
    assert engine.holds(g.fast)


def test_the_expected_answer_is_taken_in_the_poll(engine, ep, guests):
    g = guests()
    challenged(engine, g)
    data = encode(answer_msg(g.machine))
    g.peer.send(data)
    handed, events = engine.poll(ep.fileno(), 8)
    assert (handed, events) == ([], [])
    assert len(g.rtt) == 1 and 0 <= g.rtt[0] < 10_000
    assert g.counters["bytes_in"] == len(data)
    m = g.machine
    assert m.answered and m.rtt_ms == g.rtt[0]
    assert engine.holds(g.fast) and engine.next_at == m.deadline == g.fast.next_at


@pytest.mark.parametrize("what", ["unhealthy", "wrong nonce", "two lines", "partial line",
                                  "garbage", "oversized", "end of stream"])
def test_anything_else_hands_the_session_back_with_what_was_read(engine, ep, guests, what):
    g = guests()
    challenged(engine, g)
    before = g.machine
    good = encode(answer_msg(before))
    data = {"unhealthy": encode(answer_msg(before, heartbeat_health="unhealthy")),
            "wrong nonce": encode(answer_msg(before, heartbeat_response=before.nonce ^ 1)),
            "two lines": good + good,
            "partial line": good[:-5],
            "garbage": b"\x00\xff{{{\n",
            "oversized": b"x" * 9000 + b"\n",
            "end of stream": b""}[what]
    if data:
        g.peer.sendall(data)
    else:
        g.peer.shutdown(socket.SHUT_WR)
    handed, events = engine.poll(ep.fileno(), 8)
    assert handed == [g]
    assert events == [(g.host.fileno(), select.EPOLLIN, data[:4096])]
    assert not engine.holds(g.fast) and len(engine) == 0
    assert g.machine == before and g.rtt == [] and g.counters["bytes_in"] == 0


def test_a_hang_up_is_handed_back_unread(engine, ep, guests):
    g = guests()
    challenged(engine, g)
    g.peer.close()
    handed, events = engine.poll(ep.fileno(), 8)
    assert handed == [g]
    ((fd, ev, data),) = events
    assert fd == g.host.fileno() and ev & select.EPOLLHUP and data is None


def test_other_sockets_are_left_to_the_transport_unread(engine, ep, guests):
    g = guests()
    other, other_peer = socket.socketpair()
    try:
        ep.register(other.fileno(), select.EPOLLIN)
        other_peer.send(b"not the engine's\n")
        handed, events = engine.poll(ep.fileno(), 8)
        assert handed == [] and events == [(other.fileno(), select.EPOLLIN, None)]
        assert other.recv(100) == b"not the engine's\n"
        assert engine.holds(g.fast)
    finally:
        other.close()
        other_peer.close()


def test_a_hostile_neighbour_does_not_cost_a_guest_its_answer(engine, ep, guests):
    bad, good = guests(seed=1), guests(seed=2)
    challenged(engine, bad)
    assert engine.fire(time.monotonic()) == []  # both were due: good was challenged too
    good.received()
    bad.peer.sendall(b"{" * 5000)
    good.peer.send(encode(answer_msg(good.machine)))
    handed, events = engine.poll(ep.fileno(), 8)
    assert handed == [bad] and [e[0] for e in events] == [bad.host.fileno()]
    assert len(good.rtt) == 1 and engine.holds(good.fast) and good.machine.answered


def test_an_unanswered_challenge_hands_the_tick_back_at_its_window(engine, guests):
    g = guests()
    now = challenged(engine, g)
    window = g.fast.next_at
    assert window > now
    assert engine.fire(window - 0.001) == []
    assert engine.fire(window) == [(g, TICK, None)]
    assert not engine.holds(g.fast)
    assert host.wants_sample(g.machine, window)  # the Python machine's tick, with its evidence


def test_an_answer_waiting_unread_at_the_window_is_taken_first(engine, guests):
    # the loop ran late: the answer came in time but its read pass had not run yet
    g = guests()
    challenged(engine, g)
    data = encode(answer_msg(g.machine))
    g.peer.send(data)
    window = g.fast.next_at
    assert engine.fire(window + 0.050) == []
    assert engine.holds(g.fast) and len(g.rtt) == 1 and g.counters["bytes_in"] == len(data)
    assert g.machine.answered and engine.next_at == g.machine.deadline


@pytest.mark.parametrize("data", [b'{"msg_type": "nonsense"}\n', b""], ids=["other", "eof"])
def test_other_input_waiting_at_the_window_is_handed_back_before_the_tick(engine, guests,
                                                                          data):
    g = guests()
    challenged(engine, g)
    if data:
        g.peer.send(data)
    else:
        g.peer.shutdown(socket.SHUT_WR)
    before = g.machine
    assert engine.fire(g.fast.next_at) == [(g, READ, data)]
    assert not engine.holds(g.fast) and g.machine == before


def test_a_socket_that_takes_nothing_hands_the_challenge_back(engine, guests):
    g = guests()
    g.host.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        while True:
            g.host.send(b"x" * 4096)
    except BlockingIOError:
        pass
    now = time.monotonic()
    _, outputs, _ = host.step(g.state, host.Tick(), now)
    out = engine.fire(now)
    assert [(o, kind) for o, kind, _ in out] == [(g, WRITE)]
    payload = out[0][2]
    assert payload and encode(outputs[0].msg).endswith(payload)
    assert not engine.holds(g.fast)
    assert g.machine.sequence == g.state.sequence + 1  # it was challenged: the rest is queued


def test_only_due_sessions_fire_and_each_exactly_when_due(engine, guests):
    rng = random.Random(7)
    base = time.monotonic() - 1.0
    gs = [guests(seed=i, t0=base + rng.random() * 0.1) for i in range(40)]
    t = min(g.fast.next_at for g in gs) - 0.001
    for _ in range(400):
        t += rng.random() * 0.004
        due = {id(g) for g in gs if g.fast.next_at <= t}
        assert engine.fire(t) == []
        got = {id(g) for g in gs if g.received()}
        assert got == due
        for g in gs:  # answer at once: the engine re-arms for the next interval
            if id(g) in got:
                assert g.fast.answer(encode(answer_msg(g.machine)), t) is not None
        # the engine's heap saw the answers only through next_at: re-add to re-key
        for g in gs:
            if id(g) in got:
                engine.discard(g.fast)
                engine.add(g.fast, g.host.fileno(), g, g.counters, g.rtt.append, g.late.append)
        assert engine.next_at == min(g.fast.next_at for g in gs)


def test_add_refuses_a_session_or_socket_it_serves_and_discard_says_what_it_did(engine, guests):
    g = guests()
    with pytest.raises(ValueError, match="already on an engine"):
        engine.add(g.fast, g.host.fileno(), g, g.counters, g.rtt.append, g.late.append)
    other = steady.enter(g.state)
    with pytest.raises(ValueError, match="served already"):
        engine.add(other, g.host.fileno(), g, g.counters, g.rtt.append, g.late.append)
    assert engine.discard(g.fast) is True
    assert engine.discard(g.fast) is False
    assert engine.fire(time.monotonic() + 10) == [] and g.received() == b""
    engine.add(other, g.host.fileno(), g, g.counters, g.rtt.append, g.late.append)
    assert engine.holds(other) and len(engine) == 1
    engine.discard(other)


def test_the_engine_keeps_nothing_alive_once_a_session_is_off_or_it_is_gone(engine, ep):
    class Owner:
        pass

    state, _ = steady_state(3, [2.0], t0=time.monotonic() - 1.0)
    a, b = socket.socketpair()
    try:
        for how in ("discard", "engine gone"):
            owner, fast = Owner(), steady.enter(state)
            counters: dict[str, int] = {"bytes_in": 0}
            gone = weakref.ref(owner)
            eng = engine if how == "discard" else type(engine)(4096)
            eng.add(fast, a.fileno(), owner, counters, [].append, [].append)
            if how == "discard":
                eng.discard(fast)
            else:
                del eng
            del owner
            gc.collect()
            assert gone() is None, how
    finally:
        a.close()
        b.close()


async def test_an_observer_takes_every_session_off_the_engine(sock_dir) -> None:
    bus = make_bus("inproc://")
    await bus.start()
    await bus.serve_controller(StubController())
    sim = Simulator(sock_dir, 3, "normal", 100)
    uuids = await sim.start()
    agent = ComputeAgent("host-a", sock_dir, bus)
    await agent.start()
    try:
        sessions = agent.sessions
        await until(lambda: len(sessions) == 3
                    and all(s.on_steady_path for s in sessions.values()), 30)
        seen: dict[str, set[str]] = {u: set() for u in uuids}
        agent.add_observer(lambda uuid, out, mono: seen[uuid].add(type(out).__name__))
        assert not any(s.on_steady_path for s in sessions.values())
        await until(lambda: all({"Send", "RoundTrip"} <= kinds for kinds in seen.values()), 10)
        assert not any(s.on_steady_path for s in sessions.values())
    finally:
        await agent.stop()
        await sim.stop()
        await bus.stop()
