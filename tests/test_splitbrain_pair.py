"""Split-brain helper: exactly one active while the tenant network is cut.

A discrete-event simulation on a fake clock: two guests run the pair
machine; the out-of-band server-group channel loses, duplicates, delays and
reorders broadcasts; the platform (Nova via nfvha) reports crashes and
restarts with a delay and answers status queries with a lag. The invariant
is checked after every single event.
"""
from __future__ import annotations

import heapq
import itertools
import json
import random
from dataclasses import replace

import pytest

from nfvha.guest import splitbrain as sb

X, Y = "instance-x", "instance-y"
LAG = 1.0  # platform status lag D (≤ hold)


class Node:
    def __init__(self, name, peer, now, inc, hold=5.0):
        self.name, self.peer, self.inc = name, peer, inc
        self.alive = True
        self.cfg = sb.PairConfig(me=name, peer=peer, nonce=f"{name}-{inc}",
                                 interval=1.0, lease=3.0, hold=hold, status_timeout=2.0)
        self.state = sb.initial(self.cfg, now)
        self.next_tick = None

    @property
    def active(self):
        return self.alive and self.state.role == sb.ACTIVE


class Sim:
    def __init__(self, seed, loss=0.0, dup=0.0, max_delay=0.3, stale=0.0, hold=5.0,
                 lag=LAG):
        self.rnd = random.Random(seed)
        self.loss, self.dup, self.max_delay = loss, dup, max_delay
        self.stale = stale  # share of messages held back up to 30 s (stale when they land)
        self.hold, self.lag = hold, lag
        self.now = 0.0
        self.q = []
        self.seq = itertools.count()
        self.incs = itertools.count(1)
        self.nodes = {X: self._node(X, Y, 0.0), Y: self._node(Y, X, 0.0)}
        self.platform = {X: [(0.0, True)], Y: [(0.0, True)]}  # history of running
        self.log = []
        self.checks = 0
        for n in self.nodes.values():
            self._feed(n, sb.Tick())

    # -- plumbing
    def at(self, t, kind, *args):
        heapq.heappush(self.q, (t, next(self.seq), kind, args))

    def _lossy(self):
        return self.rnd.random() < self.loss

    def _delay(self):
        if self.stale and self.rnd.random() < self.stale:
            return self.rnd.uniform(self.max_delay, 30.0)
        return self.rnd.uniform(0.0, self.max_delay)

    def _node(self, name, peer, now):
        return Node(name, peer, now, next(self.incs), hold=self.hold)

    def _feed(self, node, event):
        node.state, outs, deadline = sb.step(node.state, event, self.now)
        for o in outs:
            if isinstance(o, sb.Announce):
                copies = 0 if self._lossy() else (2 if self.rnd.random() < self.dup else 1)
                for _ in range(copies):
                    self.at(self.now + self._delay(), "deliver", node.peer, node.name, o.data)
            elif isinstance(o, sb.QueryStatus):
                if not self._lossy():
                    self.at(self.now + self._delay(), "status_req", node.name, node.inc,
                            o.query_id)
            elif isinstance(o, sb.RoleChanged):
                self.log.append((self.now, node.name, o.role, o.reason))
        if node.next_tick is None or deadline != node.next_tick:
            node.next_tick = deadline
            self.at(deadline, "tick", node.name, node.inc, deadline)

    def running(self, name, t):
        state = True
        for when, up in self.platform[name]:
            if when <= t:
                state = up
        return state

    def _member(self, name, running):
        return {"instance_id": None, "instance_name": name,
                "state": "active" if running else "stopped",
                "power_state": "running" if running else "shutdown"}

    # -- faults
    def crash(self, name, t):
        self.at(t, "crash", name)

    def run(self, until, check):
        while self.q and self.q[0][0] <= until:
            t, _, kind, args = heapq.heappop(self.q)
            self.now = t
            self._handle(kind, args)
            check(self)
        self.now = until

    def _handle(self, kind, args):
        nodes = self.nodes
        if kind == "tick":
            name, inc, when = args
            n = nodes[name]
            if n.alive and n.inc == inc and n.next_tick == when:
                n.next_tick = None
                self._feed(n, sb.Tick())
        elif kind == "deliver":
            dst, src, data = args
            if nodes[dst].alive:
                self._feed(nodes[dst], sb.PeerMessage(src, data))
        elif kind == "status_req":
            name, inc, qid = args
            seen_at = self.now - self.rnd.uniform(0.0, self.lag)
            members = [self._member(m, self.running(m, seen_at)) for m in (X, Y)]
            if not self._lossy():
                self.at(self.now + self._delay(), "status_ans", name, inc, qid, members)
        elif kind == "status_ans":
            name, inc, qid, members = args
            n = nodes[name]
            if n.alive and n.inc == inc:
                self.checks += 1
                self._feed(n, sb.StatusAnswer(members, True, qid))
        elif kind == "note":
            dst, about, up = args
            if nodes[dst].alive:
                m = self._member(about, up)
                self._feed(nodes[dst], sb.report_from_notification({"payload": m}))
        elif kind == "crash":
            (name,) = args
            n = nodes[name]
            if n.alive:
                n.alive = False
                self.log.append((self.now, name, "crashed", ""))
                self.platform[name].append((self.now, False))
                if not self._lossy():
                    self.at(self.now + self.rnd.uniform(0.05, 1.0), "note", n.peer, name, False)
                self.at(self.now + self.rnd.uniform(1.0, 15.0), "restart", name)
        elif kind == "restart":
            (name,) = args
            n = self._node(name, nodes[name].peer, self.now)
            nodes[name] = n
            self.platform[name].append((self.now, True))
            if not self._lossy():
                self.at(self.now + self.rnd.uniform(0.05, 1.0), "note", n.peer, name, True)
            self._feed(n, sb.Tick())

    def actives(self):
        return [n.name for n in self.nodes.values() if n.active]


def at_most_one(sim):
    assert len(sim.actives()) <= 1, (sim.now, sim.log[-6:])


def _elect(seed):
    sim = Sim(seed)
    sim.run(30.0, at_most_one)
    assert len(sim.actives()) == 1, sim.log
    return sim


def test_election_from_cold_start_gives_one_active():
    for seed in range(20):
        sim = _elect(seed)
        # hold 5 s, then a claim/grant round trip
        assert sim.log[0][0] <= 5.0 + 2 * 0.3 + 1.0


@pytest.mark.parametrize("seed", range(40))
def test_tenant_network_cut_keeps_exactly_one_active_at_every_moment(seed):
    sim = _elect(seed)
    first = sim.actives()[0]
    # From now the pair's own IP link is gone (nothing of ours uses it) and the
    # server-group channel is hostile: 30% loss, duplicates, delays up to 4
    # leases' worth of reordering.
    sim.loss, sim.dup, sim.max_delay = 0.3, 0.2, 2.0

    def exactly_one(s):
        assert s.actives() == [first], (s.now, s.log[-6:])

    sim.run(200.0, exactly_one)
    assert sim.checks > 0  # standby's lease expired and it asked the platform


class NaivePair:
    """What the recipe replaces: a standby that takes over when heartbeats over
    the tenant network stop. Used to show the test detects split brain."""

    def __init__(self):
        self.active = {X: True, Y: False}
        self.last_heard = {X: 0.0, Y: 0.0}

    def run(self, cut_at, until, lease=3.0):
        t = 0.0
        while t < until:
            t += 1.0
            for me, peer in ((X, Y), (Y, X)):
                if t < cut_at and self.active[peer]:
                    self.last_heard[me] = t
                if not self.active[me] and t - self.last_heard[me] >= lease:
                    self.active[me] = True
            if sum(self.active.values()) > 1:
                return t
        return None


def test_naive_tenant_heartbeat_pair_splits_when_network_is_cut():
    assert NaivePair().run(cut_at=10.0, until=60.0) is not None


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("hold,lag", [(5.0, 1.0), (3.0, 3.0)])  # lag D up to hold
def test_random_crashes_restarts_and_lossy_channel_never_two_actives(seed, hold, lag):
    sim = Sim(1000 + seed, loss=0.2, dup=0.1, max_delay=1.0, stale=0.05, hold=hold, lag=lag)
    rnd = random.Random(seed)
    for _ in range(rnd.randint(1, 8)):
        sim.crash(rnd.choice([X, Y]), rnd.uniform(0.0, 150.0))
    sim.run(200.0, at_most_one)
    # quiet, lossless tail: the pair settles on exactly one active
    sim.loss, sim.dup, sim.max_delay, sim.stale = 0.0, 0.0, 0.2, 0.0
    sim.run(260.0, at_most_one)
    assert len(sim.actives()) == 1, sim.log[-8:]


@pytest.mark.parametrize("seed", range(20))
def test_standby_takes_over_promptly_when_platform_reports_active_down(seed):
    sim = _elect(seed)
    victim = sim.actives()[0]
    sim.crash(victim, 40.0)
    sim.run(40.0 + 20.0, at_most_one)
    survivor = Y if victim == X else X
    took = [t for t, who, role, _ in sim.log if who == survivor and role == sb.ACTIVE
            and t >= 40.0]
    assert took, sim.log
    # notification ≤ 1 s + status query/answer ≤ 2 x 0.3 s; generous margin
    assert took[0] - 40.0 <= 3.0


def test_silent_running_peer_is_never_taken_over():
    # The active keeps running but every broadcast from it is lost: the standby
    # claims, asks the platform (peer running), and stays standby.
    sim = _elect(7)
    active = sim.actives()[0]
    standby = Y if active == X else X
    orig = sim._feed

    def drop_from_active(node, event):
        if isinstance(event, sb.PeerMessage) and event.source_instance == active:
            return
        orig(node, event)

    sim._feed = drop_from_active
    sim.run(120.0, at_most_one)
    assert sim.actives() == [active]
    assert sim.nodes[standby].state.role == sb.STANDBY


def test_hostile_messages_are_ignored():
    cfg = sb.PairConfig(me=X, peer=Y, nonce="n")
    st = sb.initial(cfg, 0.0)
    junk = ["", "{", "[]", json.dumps({"proto": "other"}), "x" * 5000,
            json.dumps({"proto": sb.PROTO, "kind": "grant", "epoch": 1}),
            json.dumps({"proto": sb.PROTO, "kind": "active", "epoch": True}),
            json.dumps({"proto": sb.PROTO, "kind": "active", "epoch": -1}),
            json.dumps({"proto": sb.PROTO, "kind": "boom", "epoch": 1})]
    for data in junk:
        st2, out, _ = sb.step(st, sb.PeerMessage(Y, data), 1.0)
        assert st2.role == sb.STANDBY and any(isinstance(o, sb.Ignored) for o in out)
    # a third VM of the group cannot grant or claim for the pair
    grant = json.dumps({"proto": sb.PROTO, "kind": "grant", "epoch": 1, "name": X,
                        "nonce": "n"})
    claiming = replace(st, claim=(1, "n"), claim_sent_at=1.0, epoch=1)
    st2, out, _ = sb.step(claiming, sb.PeerMessage("instance-z", grant), 1.0)
    assert st2.role == sb.STANDBY and any(isinstance(o, sb.Ignored) for o in out)
    st2, out, _ = sb.step(claiming, sb.PeerMessage(Y, grant), 1.0)
    assert st2.role == sb.ACTIVE  # the same grant from the real peer does count


def _grant(epoch, nonce, name=X):
    return json.dumps({"proto": sb.PROTO, "kind": "grant", "epoch": epoch, "name": name,
                       "nonce": nonce})


def _claiming(nonce="n2", epoch=1):
    st = sb.initial(sb.PairConfig(me=X, peer=Y, nonce=nonce), 0.0)
    return replace(st, claim=(epoch, nonce), claim_sent_at=99.0, epoch=epoch)


def test_stale_grant_for_an_earlier_claim_is_useless():
    st, _, _ = sb.step(_claiming(), sb.PeerMessage(Y, _grant(1, "n1")), 100.0)
    assert st.role == sb.STANDBY  # a previous incarnation's grant
    st, _, _ = sb.step(_claiming(epoch=2), sb.PeerMessage(Y, _grant(1, "n2")), 100.0)
    assert st.role == sb.STANDBY  # a grant for an earlier claim of this incarnation
    st, _, _ = sb.step(_claiming(), sb.PeerMessage(Y, _grant(1, "n2")), 100.0)
    assert st.role == sb.ACTIVE


def test_claims_of_one_incarnation_never_reuse_an_epoch():
    st = _claiming()
    st, _, _ = sb.step(st, sb.PeerMessage(Y, json.dumps(
        {"proto": sb.PROTO, "kind": "active", "epoch": 0})), 100.0)  # claim aborted
    assert st.claim is None and st.epoch == 1
    st = replace(st, last_active_seen=None, next_check=10**6)  # lease long expired
    st, out, _ = sb.step(st, sb.Tick(), 200.0)
    assert st.claim == (2, "n2")


def test_no_grant_while_a_status_check_is_outstanding():
    st = sb.initial(sb.PairConfig(me=Y, peer=X, nonce="y1"), 0.0)
    st, out, _ = sb.step(st, sb.PlatformReport(None, X, "stopped", "shutdown"), 50.0)
    assert st.checking_until is not None
    claim = json.dumps({"proto": sb.PROTO, "kind": "claim", "epoch": 1, "name": X,
                        "nonce": "x2"})
    st2, out, _ = sb.step(st, sb.PeerMessage(X, claim), 50.5)
    assert not [o for o in out if isinstance(o, sb.Announce) and '"grant"' in o.data]
    # between check windows (the suspicion re-checked at 53..55) the claim is granted
    st3, _, _ = sb.step(st2, sb.Tick(), 53.0)
    assert st3.checking_until == 55.0
    st3, out, _ = sb.step(st3, sb.PeerMessage(X, claim), 55.5)
    assert [o for o in out if isinstance(o, sb.Announce) and '"grant"' in o.data]


def test_answer_to_an_older_status_query_is_void():
    st = sb.initial(sb.PairConfig(me=Y, peer=X, nonce="y1"), 0.0)
    st, out, _ = sb.step(st, sb.PlatformReport(None, X, "stopped", "shutdown"), 50.0)
    (q1,) = [o for o in out if isinstance(o, sb.QueryStatus)]
    st, _, _ = sb.step(st, sb.Tick(), 52.5)  # window over, no answer
    st, out, _ = sb.step(st, sb.Tick(), 53.0)  # suspect: asks again
    (q2,) = [o for o in out if isinstance(o, sb.QueryStatus)]
    down = [{"instance_name": X, "state": "stopped", "power_state": "shutdown"}]
    st2, _, _ = sb.step(st, sb.StatusAnswer(down, True, q1.query_id), 53.1)
    assert st2.role == sb.STANDBY
    st2, _, _ = sb.step(st, sb.StatusAnswer(down, True, q2.query_id), 53.1)
    assert st2.role == sb.ACTIVE


def test_paused_peer_is_not_down():
    cfg = sb.PairConfig(me=X, peer=Y, nonce="n")
    st = sb.initial(cfg, 0.0)
    st, out, _ = sb.step(st, sb.PlatformReport(None, Y, "paused", "paused"), 1.0)
    assert not any(isinstance(o, sb.QueryStatus) for o in out)
    st, out, _ = sb.step(st, sb.PlatformReport(None, Y, "stopped", "shutdown"), 1.0)
    (q,) = [o for o in out if isinstance(o, sb.QueryStatus)]
    # the answer still shows it paused: no takeover
    member = {"instance_name": Y, "state": "paused", "power_state": "paused"}
    st, out, _ = sb.step(st, sb.StatusAnswer([member], True, q.query_id), 1.2)
    assert st.role == sb.STANDBY
