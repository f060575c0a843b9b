"""The host heartbeat machine (nfvha.protocol.host) driven by hypothesis with
arbitrary event sequences: guest messages valid and hostile, in any order
(a message after a disconnect with no connect between, answers to old
challenges, replays), ticks at any time with any CPU evidence, actions,
standby.

Invariants, checked after every step:
- ``step`` never raises for a host event, and everything it sends is a
  valid v3 message; challenge nonces lie in 0..2^31-1 and never repeat
  back to back;
- connected and enabled/failed => a deadline exists (the machine never stops
  challenging; the old machine broke this after a message that arrived
  after a disconnect), no later than the next challenge or the current
  challenge's response deadline;
- a silent guest always ends in a loss: from any state, with the channel up
  and a registered guest, feeding only Ticks at the machine's deadlines
  reaches phase failed (a heartbeat_loss, or already failed) within one
  interval plus the response deadline plus the extension bound, unless the
  guest's own evidence says the host starves it (then Starved, no fault);
- the sequence number grows by exactly the messages sent (mod 2^32)."""
from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_servergroup_fuzz import ATOMS

from nfvha.protocol import heartbeat as hb
from nfvha.protocol import host

CFG = host.HostConfig(max_extension_ms=300)
u32 = st.integers(0, hb.UINT32_MAX)
samples = st.one_of(st.none(), st.builds(
    host.CpuSample, run_ns=st.integers(0, 10**12), wait_ns=st.integers(0, 10**12),
    own=st.booleans(), runnable=st.booleans()))


def guest_message(msg_type: str) -> st.SearchStrategy:
    fields = {**hb._COMMON, **hb.FIELDS.get(msg_type, {})}
    values = {}
    for name, kind in fields.items():
        if kind[0] == "int":
            values[name] = st.integers(100, 2000) if name == "heartbeat_interval_ms" else u32
        else:
            allowed = kind[2]
            values[name] = st.sampled_from(allowed) if allowed else st.text(max_size=50)
    base = st.fixed_dictionaries(values).map(lambda m: {**m, "msg_type": msg_type,
                                                        "version": 3})
    return st.one_of(base, base, st.builds(
        lambda m, k, v: {**m, k: v}, base, st.sampled_from(sorted(fields) + ["msg_type"]),
        st.sampled_from(ATOMS)))


guest_messages = st.one_of(
    *(guest_message(t) for t in sorted(hb.GUEST_TO_HOST)), guest_message(hb.INIT),
    guest_message(hb.CHALLENGE_RESPONSE), guest_message(hb.CHALLENGE),
    st.dictionaries(st.text(max_size=12), st.sampled_from(ATOMS)))


class HostMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = host.initial(CFG, nonce_seed=12345)
        self.now = 1000.0
        self.deadline = None
        self.nonces: list[int] = []

    def step(self, event: object) -> list:
        before = self.state.sequence
        self.state, outs, self.deadline = host.step(self.state, event, self.now)
        sends = [o for o in outs if isinstance(o, host.Send)]
        for o in sends:
            assert hb.validate(o.msg) is None, (hb.validate(o.msg), o.msg)
            if o.msg["msg_type"] == hb.CHALLENGE:
                nonce = o.msg["heartbeat_challenge"]
                assert 0 <= nonce <= host.NONCE_MAX
                assert not self.nonces or nonce != self.nonces[-1]
                self.nonces.append(nonce)
        assert self.state.sequence == (before + len(sends)) & hb.UINT32_MAX
        return outs

    # -- the channel ------------------------------------------------------------
    @rule()
    def connect(self):
        self.step(host.Connected())

    @rule()
    def disconnect(self):
        self.step(host.Disconnected())

    @rule(reason=st.text(max_size=20))
    def malformed(self, reason):
        self.step(host.Malformed(reason))

    # -- the guest ----------------------------------------------------------------
    @rule(msg=guest_messages)
    def receive(self, msg):
        self.step(host.Received(msg))

    @rule(interval=st.integers(100, 1000), action=st.sampled_from(hb.CORRECTIVE_ACTIONS))
    def register(self, interval, action):
        self.step(host.Received(hb.build_init(
            sequence=1, invocation_id=5, name="vm", heartbeat_interval_ms=interval,
            corrective_action=action)))

    @precondition(lambda self: self.state.nonce is not None)
    @rule(health=st.sampled_from(["healthy", "unhealthy"]), dt=st.floats(0, 0.3),
          which=st.sampled_from(["current", "previous", "other"]))
    def answer(self, health, dt, which):
        self.now += dt
        nonce = {"current": self.state.nonce, "previous": self.state.previous_nonce,
                 "other": 777}[which]
        if nonce is None:
            nonce = 0
        self.step(host.Received(hb.build_challenge_response(
            sequence=2, heartbeat_response=nonce, heartbeat_health=health,
            corrective_action="reboot", log_msg="")))

    # -- time and the world ---------------------------------------------------------
    @rule(dt=st.floats(0, 2, allow_nan=False), sample=samples,
          lag=st.floats(0, 500, allow_nan=False), unread=st.booleans(), early=st.booleans(),
          nonce=st.one_of(st.none(), st.integers(0, 2**40)))
    def tick(self, dt, sample, lag, unread, early, nonce):
        self.now += dt
        self.step(host.Tick(nonce=nonce, sample=sample, lag_ms=lag, unread=unread,
                            early=early))

    @precondition(lambda self: self.deadline is not None)
    @rule(sample=samples, unread=st.booleans())
    def tick_at_deadline(self, sample, unread):
        self.now = max(self.now, self.deadline)
        self.step(host.Tick(sample=sample, unread=unread))

    @rule(event=st.sampled_from(sorted(hb.EVENT_TYPES) + ["bogus"]),
          kind=st.sampled_from(["revocable", "irrevocable", "x"]),
          timeout=st.one_of(st.none(), st.integers(-5, 2**33)))
    def notify(self, event, kind, timeout):
        self.step(host.NotifyAction(event, kind, timeout))

    @rule()
    def standby(self):
        self.step(host.Standby("host acts"))

    # -- invariants ---------------------------------------------------------------
    @invariant()
    def never_stops_challenging(self):
        s = self.state
        if s.connected and s.phase in (host.ENABLED, host.FAILED):
            assert self.deadline is not None
            assert s.deadline is not None
            reg = s.registration
            assert reg is not None
            horizon = max(s.deadline, s.respond_by or s.deadline)
            assert self.deadline <= horizon + 1e-9

    @invariant()
    def a_silent_guest_ends_in_a_loss(self):
        s = self.state
        if not (s.connected and s.phase in (host.ENABLED, host.FAILED)):
            return
        # from here on the guest says nothing and gets its CPU (no evidence
        # of starvation): the machine must declare it within a bound
        state, deadline, now = s, self.deadline, self.now
        reg = s.registration
        assert reg is not None
        bound = now + 2 * reg.interval_ms / 1000 + CFG.max_extension_ms / 1000 + 1.0
        failed = state.phase == host.FAILED
        while not failed:
            assert deadline is not None and deadline <= bound, (state, deadline, bound)
            now = max(now, deadline)
            idle = host.CpuSample(0, 0) if host.wants_sample(state, now) else None
            state, outs, deadline = host.step(state, host.Tick(sample=idle), now)
            failed = state.phase == host.FAILED or any(
                isinstance(o, host.Fault) for o in outs)


HostMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_host_machine = HostMachine.TestCase
