"""The server-group machines (nfvha.protocol.sgsession, sgclient) driven by
hypothesis with arbitrary event sequences (issue 13). The random
never-raise runs of tests/test_servergroup_fuzz.py feed these machines its
hostile messages (its KEYS and ATOMS); here the invariants are checked
after every step.

Host session (one guest's channel):
- tokens within [0, burst], status tokens within [0, status_burst];
- what reaches the controller carries the host-stamped source_instance and
  a valid payload (broadcast data that check_broadcast_data accepts, a
  status seq in 0..MAX_SEQ); never more than the bucket allows since the
  start (burst + rate x elapsed), status queries likewise;
- every nack it sends is a valid base-layer message within MAX_MSG; after
  a rate-limit nack, drops are silent until a message passes.

Guest client:
- at most max_pending queries, distinct seqs, each with at most
  MAX_STATUS_MEMBERS members; the deadline is the earliest pending one;
- every query started ends in exactly one StatusResult, and a tick past
  every deadline ends them all (a query never hangs);
- every message it sends is one the host session accepts."""
from __future__ import annotations

import math

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_servergroup_fuzz import ATOMS, KEYS

from nfvha.protocol import sgclient, sgsession, sgwire

values = st.recursive(st.sampled_from(ATOMS), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=8)
DATA = st.one_of(st.text(max_size=60), st.sampled_from(["", "a\nb", "x" * 3050, "x" * 3051,
                                                         "é" * 1526, "\udcff"]))
apps = st.one_of(
    DATA.map(lambda d: {"version": 2, "msg_type": "broadcast", "data": d}),
    st.integers(-2, 2**32).map(lambda s: {"version": 2, "msg_type": "status_query", "seq": s}),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6),
)
guest_msgs = st.one_of(
    apps.map(sgwire.wrap),
    st.builds(lambda a, k, v: {**sgwire.wrap(a), k: v}, apps, st.sampled_from(KEYS), values),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6),
)
CFG = sgsession.SessionConfig(instance="instance-1", rate_per_s=5.0, burst=6, status_rate_per_s=1.0,
                              status_burst=2)


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = sgsession.session(CFG)
        self.now = 100.0
        self.t0 = self.latest = None  # the first and the latest time a step saw
        self.forwarded = 0
        self.queries = 0

    def step(self, event) -> list:
        throttled = self.state.throttled
        if not isinstance(event, sgsession.Deliver):  # what the bucket is charged for
            self.t0 = self.now if self.t0 is None else self.t0
            self.latest = self.now if self.latest is None else max(self.latest, self.now)
        self.state, outs = sgsession.session_step(self.state, event, self.now)
        for o in outs:
            assert isinstance(o, (sgsession.Send, sgsession.ToController, sgsession.ToHeartbeat,
                                  sgsession.Violation))
            if isinstance(o, sgsession.ToController):
                self.forwarded += 1
                p = o.payload
                assert p["source_instance"] == CFG.instance
                if o.kind == sgwire.BROADCAST:
                    assert sgwire.check_broadcast_data(p["data"]) is None
                else:
                    self.queries += 1
                    assert 0 <= p["seq"] <= sgwire.MAX_SEQ
            if isinstance(o, sgsession.Send) and not isinstance(event, sgsession.Deliver):
                env = sgwire.unwrap(o.msg, strip_source_instance=False)
                assert env.data["msg_type"] == sgwire.NACK
                assert sgwire.encoded_size(o.msg) <= sgwire.MAX_MSG
                if throttled and "rate limit exceeded, message" in env.data["log_msg"]:
                    raise AssertionError("a second rate-limit nack while throttled")
        return outs

    @rule(msg=guest_msgs)
    def guest_sends(self, msg):
        self.step(sgsession.Received(msg))

    @rule(reason=st.sampled_from(["oversized", "invalid-json", "non-utf8"]))
    def malformed(self, reason):
        self.step(sgsession.Malformed(reason))

    @rule(app=apps)
    def deliver(self, app):
        self.step(sgsession.Deliver(app))

    @rule(dt=st.one_of(st.floats(0, 3, allow_nan=False), st.just(-5.0)))
    def time_passes(self, dt):
        self.now += dt  # a step back too: it must never add tokens

    @invariant()
    def buckets(self):
        s = self.state
        assert 0.0 <= s.tokens <= CFG.burst and 0.0 <= s.status_tokens <= CFG.status_burst

    @invariant()
    def rate_is_bounded(self):
        if self.t0 is None:
            return
        elapsed = self.latest - self.t0  # a clock step back gives nothing back
        assert self.forwarded <= CFG.burst + CFG.rate_per_s * elapsed + 1e-9
        assert self.queries <= CFG.status_burst + CFG.status_rate_per_s * elapsed + 1e-9
        assert self.state.accepted == self.forwarded


class ClientMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = sgclient.client()
        self.now = 50.0
        self.deadline = None
        self.started: list[int] = []
        self.ended: list[int] = []
        self.host = sgsession.session(sgsession.SessionConfig(
            instance="me", rate_per_s=1e9, burst=10**9, status_rate_per_s=1e9,
            status_burst=10**9))

    def step(self, event) -> list:
        self.state, outs, self.deadline = sgclient.client_step(self.state, event, self.now)
        for o in outs:
            if isinstance(o, sgclient.StatusStarted):
                self.started.append(o.seq)
            elif isinstance(o, sgclient.StatusResult):
                assert o.seq in self.started and o.seq not in self.ended, o
                self.ended.append(o.seq)
            elif isinstance(o, sgclient.Send):  # the host session takes what the guest sends
                self.host, got = sgsession.session_step(self.host, sgsession.Received(o.msg),
                                                        self.now)
                assert any(isinstance(x, sgsession.ToController) for x in got), got
        return outs

    @rule(data=DATA)
    def broadcast(self, data):
        self.step(sgclient.Broadcast(data))

    @rule(timeout=st.one_of(st.floats(0, 10, allow_nan=False),
                            st.sampled_from([math.nan, math.inf, -1.0])))
    def status_request(self, timeout):
        self.step(sgclient.StatusRequest(timeout))

    @rule(app=apps, seq_from_pending=st.booleans())
    def host_sends(self, app, seq_from_pending):
        if seq_from_pending and self.state.pending and isinstance(app, dict) and "seq" in app:
            app = {**app, "seq": self.state.pending[0].seq}
        self.step(sgclient.Received(sgwire.wrap(app)))

    @rule(kind=st.sampled_from(["response", "done", "nack"]), member=values)
    @precondition(lambda self: self.state.pending)
    def host_answers(self, kind, member):
        seq = self.state.pending[-1].seq
        app = {"response": sgwire.status_response(seq, {"m": member}),
               "done": sgwire.status_response_done(seq),
               "nack": sgwire.nack(sgwire.STATUS_QUERY, "status query rate limit exceeded")}[kind]
        self.step(sgclient.Received(sgwire.wrap(app)))

    @rule(msg=guest_msgs)
    def host_garbage(self, msg):
        self.step(sgclient.Received(msg))

    @rule(dt=st.floats(0, 5, allow_nan=False))
    def tick(self, dt):
        self.now += dt
        self.step(sgclient.Tick())

    @invariant()
    def pending_is_bounded(self):
        seqs = [p.seq for p in self.state.pending]
        assert len(seqs) == len(set(seqs)) <= self.state.max_pending
        assert all(len(p.members) <= sgwire.MAX_STATUS_MEMBERS for p in self.state.pending)
        assert 1 <= self.state.next_seq <= sgwire.MAX_SEQ
        if seqs:
            assert self.deadline == min(p.deadline for p in self.state.pending)
            assert math.isfinite(self.deadline)
        else:
            assert self.deadline is None
        assert sorted(seqs) == sorted(set(self.started) - set(self.ended))

    def teardown(self):
        if self.deadline is not None:  # a tick past every deadline ends every query
            self.now = self.deadline + 1e6
            self.step(sgclient.Tick())
        assert not self.state.pending and sorted(self.started) == sorted(self.ended)


for machine in (SessionMachine, ClientMachine):
    machine.TestCase.settings = settings(
        max_examples=150, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_session_machine = SessionMachine.TestCase
test_client_machine = ClientMachine.TestCase
