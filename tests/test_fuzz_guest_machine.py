"""The guest heartbeat machine (nfvha.protocol.guest) driven by hypothesis
with arbitrary event sequences: host messages valid and hostile, ticks at
any time, channel loss, vote results, restarts, stop (issue 13).

Invariants, checked after every step:
- ``step`` never raises, and everything the guest sends is a valid v3
  message (heartbeat.validate) whatever the health text or script output;
- the sequence number grows by exactly the messages sent (mod 2^32);
- registering => a deadline no later than the next init resend;
  registered => a deadline no later than host_gone after the last
  challenge (a silent host is always noticed);
- at most max_pending_votes pending votes, distinct ids, each answered at
  most once; a tick past every deadline answers them all ("timeout");
- stopped is final: nothing is sent after Stop."""
from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_servergroup_fuzz import ATOMS

from nfvha.protocol import guest as g
from nfvha.protocol import heartbeat as hb

CFG = g.GuestConfig(invocation_id=7, name="vm-1", interval_ms=1000, max_pending_votes=3)

# health text and script output come from the guest's own probes and scripts
TEXT = st.one_of(st.text(max_size=300), st.sampled_from(["", "\udcff", "\ud800x", "é" * 200]))
u32 = st.integers(0, hb.UINT32_MAX)  # hostile values come from the one-field mutation


def host_message(msg_type: str) -> st.SearchStrategy:
    fields = {**hb._COMMON, **hb.FIELDS.get(msg_type, {})}
    values = {}
    for name, kind in fields.items():
        if kind[0] == "int":
            values[name] = st.just(7) if name == "invocation_id" else u32
        else:
            allowed = kind[2]
            values[name] = st.sampled_from(allowed) if allowed else TEXT
    base = st.fixed_dictionaries(values).map(lambda m: {**m, "msg_type": msg_type,
                                                        "version": 3})
    return st.one_of(base, base, st.builds(
        lambda m, k, v: {**m, k: v}, base, st.sampled_from(sorted(fields) + ["msg_type"]),
        st.sampled_from(ATOMS)))


host_messages = st.one_of(
    *(host_message(t) for t in sorted(hb.HOST_TO_GUEST)), host_message(hb.CHALLENGE),
    host_message(hb.CHALLENGE), host_message("init"),
    st.dictionaries(st.text(max_size=12), st.sampled_from(ATOMS)))


class GuestMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = g.initial(CFG)
        self.now = 1000.0
        self.deadline = None
        self.scripts: set[int] = set()  # votes handed to the event script
        self.answered: list[int] = []
        self.stopped = False

    def step(self, event) -> list:
        before = self.state.sequence
        self.state, outs, self.deadline = g.step(self.state, event, self.now)
        sends = [o for o in outs if isinstance(o, g.Send)]
        for o in sends:
            assert hb.validate(o.msg) is None, (hb.validate(o.msg), o.msg)
            if o.msg["msg_type"] == hb.ACTION_RESPONSE:
                self.answered.append(o.msg["invocation_id"])
        assert self.state.sequence == (before + len(sends)) & hb.UINT32_MAX
        if self.stopped:
            assert not sends, sends
        for o in outs:
            if isinstance(o, g.RunEventScript):
                self.scripts.add(o.invocation_id)
        return outs

    @rule()
    def start(self):
        self.step(g.Start())

    @rule(msg=host_messages, healthy=st.booleans(), log=TEXT,
          action=st.sampled_from(["", "reboot", "bogus", "none"]))
    def receive(self, msg, healthy, log, action):
        self.step(g.Received(msg, g.Health(healthy, action, log)))

    @rule(dt=st.floats(0, 20, allow_nan=False))
    def tick(self, dt):
        self.now += dt
        self.step(g.Tick())

    @precondition(lambda self: self.deadline is not None)
    @rule()
    def tick_at_deadline(self):
        self.now = max(self.now, self.deadline)
        self.step(g.Tick())

    @rule()
    def host_gone(self):
        self.step(g.HostGone())

    @rule(which=st.integers(0, 5), result=st.sampled_from(list(hb.VOTE_RESULTS) + ["junk"]),
          log=TEXT)
    def vote_result(self, which, result, log):
        ids = sorted(self.scripts) or [which]
        self.step(g.VoteResult(ids[which % len(ids)], result, log))

    @rule()
    def stop(self):
        self.step(g.Stop())
        self.stopped = True

    @invariant()
    def timers(self):
        s = self.state
        if s.phase == g.REGISTERING:
            assert self.deadline is not None and self.deadline <= s.retry_at
        if s.phase == g.REGISTERED:
            assert s.last_challenge_at is not None
            assert self.deadline is not None
            assert self.deadline <= s.last_challenge_at + CFG.host_gone_s
        for v in s.votes:
            assert self.deadline is not None and self.deadline <= v.deadline
        if self.deadline is None:
            assert s.phase in (g.IDLE, g.OFFLINE, g.STOPPED) and not s.votes

    @invariant()
    def votes(self):
        ids = [v.invocation_id for v in self.state.votes]
        assert len(ids) == len(set(ids)) <= CFG.max_pending_votes
        assert 0 <= self.state.sequence <= hb.UINT32_MAX

    def teardown(self):
        # a tick past every deadline answers every pending vote
        if self.state.votes:
            pending = [v.invocation_id for v in self.state.votes]
            self.now = max(v.deadline for v in self.state.votes)
            self.step(g.Tick())
            assert not self.state.votes
            assert all(i in self.answered for i in pending)


GuestMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_guest_machine = GuestMachine.TestCase
