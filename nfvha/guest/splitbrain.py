"""Who is active in a 1:1 active/standby pair, decided over server-group messaging.

The pair talks through the platform's out-of-band channel (broadcasts,
notifications, status), not through the tenant network, so a cut tenant
network cannot make both sides active. Sans-I/O: ``step(state, event, now)
-> (state, outputs, deadline)``; ``PairRunner`` wires it to a GroupClient.

Rules that bind this file (the argument for "at most one active"):

1. Everyone starts STANDBY and never claims before ``hold`` seconds after
   start (``hold`` ≥ ``lease`` and ≥ the platform's status lag D).
2. The ACTIVE broadcasts ``active(epoch)`` every ``interval``. It never grants
   a claim and never steps down, except on hearing ``active`` with a higher
   (epoch, name) — a fencing rule that cannot fire under the assumptions
   below, there only to end an overlap quickly if they are broken.
3. Takeover by agreement: a STANDBY that has heard no ``active`` for
   ``lease`` sends ``claim(epoch = highest seen + 1, nonce)``. The peer grants
   only while it is STANDBY, not checking (rule 4), and the claim is not
   beaten by its own outstanding claim ((epoch, name) order) nor by a claim
   it granted before. The claimant becomes ACTIVE only on ``grant`` echoing
   its exact (epoch, name, nonce) — so a stale grant meant for an earlier
   incarnation is useless. Two nodes become ACTIVE only with each other's
   grant, and a node grants only while STANDBY, so they cannot both hold one.
   A silent peer never grants: silence alone never causes a takeover.
4. Takeover by the platform: when the platform reports the peer not running
   (Nova vm_state stopped/deleted/shelved, power_state shutdown/crashed),
   or the lease has expired, the STANDBY asks ``status()`` and, while the
   answer is outstanding, grants nothing. It becomes ACTIVE only if the
   answer (complete) shows the peer not running (a peer missing from the
   answer is unknown, not down). The
   answer reflects the platform at most D old; the query was sent after the
   last grant; a peer restarted after that grant cannot be active before
   ``hold`` ≥ D has passed — so "not running" means no active peer.

Assumptions: broadcasts may be lost, duplicated, delayed and reordered, but
not forged (the host stamps ``source_instance``); a platform "not running"
report is true when made and a stopped VM loses its role (restarts as
STANDBY); a paused/suspended peer is NOT down (it could resume as ACTIVE),
so it blocks takeover until the platform stops it. Liveness: a hung but
running peer is taken over only after the platform stops it (nfvha's
heartbeat corrective action does that).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

ACTIVE = "active"
STANDBY = "standby"
PROTO = "nfvha-pair/1"

DOWN_STATES = frozenset(
    ["stopped", "deleted", "soft-delete", "soft_deleted", "shelved", "shelved_offloaded"]
)
DOWN_POWER = frozenset(["shutdown", "crashed", "4", "6"])  # names or Nova's codes


@dataclass(frozen=True)
class PairConfig:
    me: str  # my instance name, as the host stamps it in source_instance
    peer: str  # the peer's instance name
    nonce: str  # unique per process start (e.g. uuid4().hex): tells incarnations apart
    peer_uuid: Optional[str] = None  # matches notifications that carry only the uuid
    interval: float = 1.0
    lease: float = 3.0
    hold: float = 5.0
    status_timeout: float = 2.0


@dataclass(frozen=True)
class PairState:
    config: PairConfig
    started_at: float
    role: str = STANDBY
    # Held epoch when ACTIVE; when STANDBY the highest seen, claimed or granted.
    # Never decreases, so every claim of one incarnation has its own epoch and a
    # grant can only ever match the claim it answered.
    epoch: int = 0
    last_active_seen: Optional[float] = None
    claim: Optional[Tuple[int, str]] = None  # my outstanding (epoch, nonce)
    claim_sent_at: Optional[float] = None
    promised: Optional[Tuple[int, str]] = None  # highest claim I granted: (epoch, name)
    checking_until: Optional[float] = None  # a status query is outstanding
    query_id: int = 0  # the outstanding (or last) status query; older answers are void
    next_check: Optional[float] = None  # earliest next status query
    # The platform said "peer down" until then: status is re-asked every interval,
    # since the status answer may lag the notification by up to D.
    suspect_until: Optional[float] = None
    next_announce: float = 0.0


def initial(config: PairConfig, now: float) -> PairState:
    if config.hold < config.lease:
        raise ValueError("hold must be at least the lease")
    return PairState(config=config, started_at=now, next_announce=now)


# events
@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class PeerMessage:
    source_instance: str
    data: str  # a broadcast's data


@dataclass(frozen=True)
class PlatformReport:
    """A peer state from a notification's payload or a status member."""

    instance_id: Optional[str]
    instance_name: Optional[str]
    state: Optional[str]
    power_state: Optional[str]


@dataclass(frozen=True)
class StatusAnswer:
    members: List[Dict[str, Any]]
    complete: bool
    query_id: int  # from the QueryStatus it answers


Event = Union[Tick, PeerMessage, PlatformReport, StatusAnswer]


# outputs
@dataclass(frozen=True)
class Announce:
    data: str  # to broadcast


@dataclass(frozen=True)
class QueryStatus:
    query_id: int  # to be echoed in the StatusAnswer


@dataclass(frozen=True)
class RoleChanged:
    role: str
    epoch: int
    reason: str


@dataclass(frozen=True)
class Ignored:
    reason: str


Output = Union[Announce, QueryStatus, RoleChanged, Ignored]


def _msg(kind: str, epoch: int, **extra: str) -> Announce:
    body: Dict[str, Any] = {"proto": PROTO, "kind": kind, "epoch": epoch}
    body.update(extra)
    return Announce(json.dumps(body, separators=(",", ":"), sort_keys=True))


def report_from_notification(data: Dict[str, Any]) -> Optional[PlatformReport]:
    """Notification ``data`` ({payload, event_type, ...}) → PlatformReport."""
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(payload, dict):
        return None
    return _report(payload)


def _report(d: Dict[str, Any]) -> PlatformReport:
    def s(key: str) -> Optional[str]:
        v = d.get(key)
        return None if v is None else str(v)

    return PlatformReport(s("instance_id"), s("instance_name"), s("state"), s("power_state"))


def _is_down(r: PlatformReport) -> bool:
    return (r.state or "").lower() in DOWN_STATES or (r.power_state or "").lower() in DOWN_POWER


def _is_peer(cfg: PairConfig, r: PlatformReport) -> bool:
    return (r.instance_name is not None and r.instance_name == cfg.peer) or (
        cfg.peer_uuid is not None and r.instance_id == cfg.peer_uuid
    )


def _become_active(st: PairState, epoch: int, now: float, reason: str, out: List[Output]):
    st = replace(st, role=ACTIVE, epoch=epoch, claim=None, claim_sent_at=None,
                 checking_until=None, next_announce=now + st.config.interval)
    out.append(RoleChanged(ACTIVE, epoch, reason))
    out.append(_msg("active", epoch))
    return st


def _deadline(st: PairState, now: float) -> float:
    """Next time a Tick is due; always later than ``now`` (after _on_time ran)."""
    cfg = st.config
    if st.role == ACTIVE:
        return st.next_announce
    times = [st.next_announce]
    seen = st.last_active_seen if st.last_active_seen is not None else st.started_at
    eligible_at = max(seen + cfg.lease, st.started_at + cfg.hold)
    if st.checking_until is not None:
        times.append(st.checking_until)
    elif now < eligible_at:
        times.append(eligible_at)
        if st.suspect_until is not None and now < st.suspect_until and st.next_check:
            times.append(st.next_check)
    else:
        if st.next_check is not None:
            times.append(st.next_check)
        if st.claim_sent_at is not None:
            times.append(st.claim_sent_at + cfg.lease)
    return min(t for t in times if t > now) if any(t > now for t in times) else now + cfg.interval


def step(st: PairState, event: Event, now: float) -> Tuple[PairState, List[Output], float]:
    out: List[Output] = []
    if st.checking_until is not None and now >= st.checking_until:
        st = replace(st, checking_until=None)  # no answer in time: grants allowed again
    if isinstance(event, PeerMessage):
        st = _on_message(st, event, now, out)
    elif isinstance(event, PlatformReport):
        if st.role == STANDBY and _is_peer(st.config, event):
            if not _is_down(event):
                st = replace(st, suspect_until=None)
            else:
                st = replace(st, suspect_until=now + st.config.hold)
                if st.checking_until is None:
                    st = _start_check(st, now, out)
    elif isinstance(event, StatusAnswer):
        st = _on_status(st, event, now, out)
    st = _on_time(st, now, out)
    return st, out, _deadline(st, now)


def _start_check(st: PairState, now: float, out: List[Output]) -> PairState:
    qid = st.query_id + 1
    out.append(QueryStatus(qid))
    return replace(st, checking_until=now + st.config.status_timeout,
                   next_check=now + st.config.lease, query_id=qid)


def _on_time(st: PairState, now: float, out: List[Output]) -> PairState:
    cfg = st.config
    if st.role == ACTIVE:
        if now >= st.next_announce:
            out.append(_msg("active", st.epoch))
            st = replace(st, next_announce=now + cfg.interval)
        return st
    if now >= st.next_announce:
        # standby announces too: the peer learns the epochs seen here
        out.append(_msg("standby", st.epoch))
        if st.claim is not None and st.checking_until is None:
            out.append(_msg("claim", st.claim[0], name=cfg.me, nonce=cfg.nonce))  # resend
        st = replace(st, next_announce=now + cfg.interval)
    seen = st.last_active_seen if st.last_active_seen is not None else st.started_at
    eligible = now >= st.started_at + cfg.hold and now >= seen + cfg.lease
    suspect = st.suspect_until is not None and now < st.suspect_until
    if ((eligible or suspect) and st.checking_until is None
            and (st.next_check is None or now >= st.next_check)):
        # lease-driven checks also recover a lost "peer down" notification
        st = _start_check(st, now, out)
    if not eligible:
        return st
    if st.checking_until is not None:
        return st  # no claim while checking: our own grant-free window
    if st.claim is None or (st.claim_sent_at is not None
                            and now >= st.claim_sent_at + cfg.lease):
        # fresh claim, or a new epoch after a whole lease without a grant
        e = st.epoch + 1
        st = replace(st, claim=(e, cfg.nonce), claim_sent_at=now, epoch=e)
        out.append(_msg("claim", e, name=cfg.me, nonce=cfg.nonce))
    return st


def _parse(data: str) -> Optional[Dict[str, Any]]:
    if not isinstance(data, str) or len(data) > 1024:
        return None
    try:
        m = json.loads(data)
    except ValueError:
        return None
    if not isinstance(m, dict) or m.get("proto") != PROTO:
        return None
    e = m.get("epoch")
    if not isinstance(e, int) or isinstance(e, bool) or not 0 <= e < 2**62:
        return None
    if m.get("kind") not in ("active", "standby", "claim", "grant"):
        return None
    if m["kind"] in ("claim", "grant") and not (
        isinstance(m.get("name"), str) and isinstance(m.get("nonce"), str)
    ):
        return None
    return m


def _on_message(st: PairState, ev: PeerMessage, now: float, out: List[Output]) -> PairState:
    cfg = st.config
    if ev.source_instance != cfg.peer:
        out.append(Ignored("message from " + ev.source_instance[:64]))
        return st
    m = _parse(ev.data)
    if m is None:
        out.append(Ignored("not a pair message"))
        return st
    kind, e = m["kind"], m["epoch"]
    if kind == "active":
        if st.role == ACTIVE:
            if (e, cfg.peer) > (st.epoch, cfg.me):
                out.append(RoleChanged(STANDBY, e, "peer active with a higher epoch"))
                return replace(st, role=STANDBY, epoch=e, last_active_seen=now,
                               next_announce=now)
            return st  # stale: the peer steps down when it hears us
        return replace(st, epoch=max(st.epoch, e), last_active_seen=now, claim=None,
                       claim_sent_at=None)
    if kind == "standby":
        return replace(st, epoch=max(st.epoch, e)) if st.role == STANDBY else st
    if kind == "claim":
        if m["name"] != cfg.peer:
            return st
        if st.role == ACTIVE:
            out.append(_msg("active", st.epoch))  # the denial
            return st
        if st.checking_until is not None:
            return st
        key = (e, cfg.peer)
        if st.claim is not None and (st.claim[0], cfg.me) > key:
            return st  # mine wins; the peer grants it
        if st.promised is not None and key < st.promised:
            return st  # older than what I granted already
        out.append(_msg("grant", e, name=cfg.peer, nonce=m["nonce"]))
        return replace(st, promised=key, claim=None, claim_sent_at=None,
                       epoch=max(st.epoch, e))
    # grant
    if (st.role == STANDBY and st.checking_until is None and st.claim is not None
            and m["name"] == cfg.me and (e, m["nonce"]) == st.claim):
        return _become_active(st, e, now, "peer granted the claim", out)
    return st


def _on_status(st: PairState, ev: StatusAnswer, now: float, out: List[Output]) -> PairState:
    if st.checking_until is None or st.role != STANDBY or ev.query_id != st.query_id:
        # unsolicited or late: an answer older than a grant made since must never count
        return st
    st = replace(st, checking_until=None)
    if not ev.complete:
        return st
    reports = [_report(m) for m in ev.members if isinstance(m, dict)]
    peer = [r for r in reports if _is_peer(st.config, r)]
    # A peer missing from the answer is unknown, not down (a wrong group view
    # must never make two actives).
    if not peer or not all(_is_down(r) for r in peer):
        if st.suspect_until is not None and now < st.suspect_until:
            st = replace(st, next_check=now + st.config.interval)
        return st
    return _become_active(st, st.epoch + 1, now, "platform reports the peer not running", out)


class PairRunner:
    """Drives the machine with a nfvha.guest.group.GroupClient and a clock.

    ``runner.run()`` blocks; ``on_role(cb)`` is called with (role, epoch, reason).
    """

    def __init__(self, client: Any, config: PairConfig, clock: Any = None) -> None:
        import time

        self.client = client
        self.clock = clock or time.monotonic
        self.state = initial(config, self.clock())
        self._callbacks: List[Any] = []
        self._deadline = self.clock()

    @property
    def role(self) -> str:
        return self.state.role

    def on_role(self, cb: Any) -> None:
        self._callbacks.append(cb)

    def feed(self, event: Event) -> None:
        self.state, outputs, self._deadline = step(self.state, event, self.clock())
        self._do(outputs)

    def _do(self, outputs: Iterable[Output]) -> None:
        for o in outputs:
            if isinstance(o, Announce):
                self.client.broadcast(o.data)
            elif isinstance(o, QueryStatus):
                qid = o.query_id
                self.client.start_status(
                    self.state.config.status_timeout,
                    lambda members, complete, q=qid: self.feed(
                        StatusAnswer(members, complete, q)),
                )
            elif isinstance(o, RoleChanged):
                for cb in self._callbacks:
                    cb(o.role, o.epoch, o.reason)

    def run(self, until: Any = None) -> None:
        """Serve until ``until()`` is true (forever by default)."""
        while until is None or not until():
            timeout = max(0.0, self._deadline - self.clock())
            for ev in self.client.poll(timeout):
                if ev["type"] == "broadcast":
                    self.feed(PeerMessage(ev["source_instance"], ev["data"]))
                elif ev["type"] == "notification":
                    r = report_from_notification(ev["data"])
                    if r is not None:
                        self.feed(r)
            if self.clock() >= self._deadline:
                self.feed(Tick())
