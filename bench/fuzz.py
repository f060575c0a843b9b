"""`make fuzz`: a long fuzzing campaign over every parser, machine and
validator that takes untrusted input (issue 13), printing inputs, time and
findings.

Random generation at volume (the CI's hypothesis tests shrink and check
invariants; this one throws many more inputs): hostile JSON-like values
biased towards what broke things before (timestamps at the edges of
datetime's range, numbers too big for a float, NaN, integers beyond 64
bits, lone surrogates, lists where a string belongs, deep nesting, byte
garbage between frames), in worker processes, each target given a share.

A finding is an exception a target must not raise, or a broken invariant;
each is printed once with the seed and input that gave it (re-run with
--seed and --only to reproduce). Exit status 1 if anything was found.

    python bench/fuzz.py                      # 10^7 inputs, all cores
    python bench/fuzz.py --inputs 200000      # a short check
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nfvha.controller import nova_notifications as nn  # noqa: E402
from nfvha.controller import validate  # noqa: E402
from nfvha.controller.apibounds import BadJSON, strict_loads  # noqa: E402
from nfvha.controller.servergroups import ServerGroups, validate_group  # noqa: E402
from nfvha.guest import splitbrain as sb  # noqa: E402
from nfvha.protocol import framing, sgclient, sgsession, sgwire  # noqa: E402
from nfvha.protocol import guest as g  # noqa: E402
from nfvha.protocol import heartbeat as hb  # noqa: E402
from nfvha.protocol import host as h  # noqa: E402

KEYS = sorted({*validate.HEARTBEAT_STATES, "id", "instance_uuid", "uuid", "host", "kind",
               "detail", "detected_at", "detected_mono", "state", "health", "interval_ms",
               "name", "corrective_action", "at", "vote_secs", "version", "revision",
               "sequence", "msg_type", "invocation_id", "heartbeat_challenge",
               "heartbeat_response", "heartbeat_health", "log_msg", "event_type",
               "notification_type", "timeout_ms", "vote_result", "source_addr", "dest_addr",
               "data", "seq", "source_instance", "orig_msg_type", "payload", "priority",
               "timestamp", "oslo.version", "oslo.message", "nova_object.data", "members",
               "instance_id", "state_update", "proto", "epoch", "nonce"})
TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01",
         "9999-12-31T23:59:59.999999Z", "2026-11-24T03:00:00Z", "2026-02-30T00:00:00",
         "2026-11-24T03:00:00+24:00", "1969-12-31T23:59:59Z", "\udcff", ""]
NUMBERS = [float("nan"), float("inf"), float("-inf"), 1e308, 5e-324, 2**31 - 1, 2**31,
           2**32, 2**63, 2**64, -(2**63) - 1, 2**1024, 10**400, 0, -1, 1, 3, True, False]
TEXT = ["", " ", "\n", "a\nb", "\udcff", "\ud800x", "é" * 200, "x" * 300, "x" * 3051,
        "enabled", "healthy", "failed", "reboot", "heartbeat_loss", "challenge", "init",
        "init_ack", "nack", "action_notify", "broadcast", "status_query", "status_response",
        "status_response_done", "notification", "cgcs.server_grp", "cgcs.heartbeat", "2.0",
        "revocable", "stop", "accept", "instance-1", "12345678-1234-1234-1234-123456789abc",
        "12345678-1234-1234-1234-123456789abc\n", sb.PROTO, "compute.instance.update"]
ATOMS: List[Any] = [None, *NUMBERS, *TIMES, *TEXT]


def value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth < 5 and r < 0.25:
        return {rng.choice(KEYS): value(rng, depth + 1) for _ in range(rng.randint(0, 7))}
    if depth < 5 and r < 0.35:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if r < 0.45:
        return rng.randint(-(2**70), 2**70) if rng.random() < 0.2 else rng.randint(-3, 2**33)
    if r < 0.5:
        return "".join(chr(rng.choice((rng.randint(32, 126), rng.randint(0, 0x10FFFF))))
                       for _ in range(rng.randint(0, 12)))
    return rng.choice(ATOMS)


def obj(rng: random.Random) -> dict:
    v = value(rng)
    return v if isinstance(v, dict) else {rng.choice(KEYS): v}


def mutate(rng: random.Random, good: dict) -> dict:
    """A valid message with one field changed, dropped or added."""
    m = dict(good)
    k = rng.choice(sorted(m) + [rng.choice(KEYS)])
    if rng.random() < 0.2:
        m.pop(k, None)
    else:
        m[k] = value(rng, 3)
    return m


class Finding(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Finding(what)


# --- targets: each runs one input and raises Finding (or anything) on a defect ---------------

def t_validators(rng: random.Random, _: Any) -> None:
    ev = obj(rng) if rng.random() < 0.5 else mutate(rng, {
        "id": "e1", "instance_uuid": "u1", "host": "compute-1", "kind": "heartbeat_loss",
        "detected_at": "2026-11-24T03:00:00Z", "detected_mono": 1.5})
    try:
        out = validate.fault_event(ev)
        check(validate.EARLIEST <= out["detected_at"] < validate.LATEST, "detected_at range")
        check(out["detected_mono"] is None or math.isfinite(out["detected_mono"]), "mono")
        json.dumps(out, allow_nan=False, default=str).encode("utf-8")
    except validate.Invalid:
        pass
    rec = obj(rng) if rng.random() < 0.5 else mutate(rng, {
        "instance_uuid": "u1", "state": "enabled", "health": "healthy", "interval_ms": 1000,
        "at": "2026-11-24T03:00:00Z", "vote_secs": 8})
    try:
        out = validate.instance_record(value(rng, 4) if rng.random() < 0.2 else "c1", rec)
        json.dumps(out, allow_nan=False, default=str).encode("utf-8")
        for v in out["facts"].values():
            check(not isinstance(v, int) or isinstance(v, bool) or validate.int64(v),
                  "fact beyond 64 bits")
    except validate.Invalid:
        pass
    try:
        validate.sync_report(value(rng, 4), value(rng, 4), value(rng, 4))
    except validate.Invalid:
        pass


def t_rest_json(rng: random.Random, _: Any) -> None:
    v = value(rng)
    text = json.dumps(v, allow_nan=True, ensure_ascii=rng.random() < 0.5, default=str)
    if rng.random() < 0.3:
        cut = rng.randint(0, len(text))
        text = text[:cut] + rng.choice(["", "[" * 40, "NaN", "\udcff", "\x00", "1e999"])
    try:
        out = strict_loads(text.encode("utf-8", "surrogatepass"))
        json.dumps(out, allow_nan=False).encode("utf-8")  # what it accepts, it can show
    except BadJSON:
        pass
    except ValueError:  # JSONDecodeError, not UTF-8, > 4300 digits: a 400/422 in the API
        pass


def t_server_groups(rng: random.Random, groups: ServerGroups) -> None:
    try:
        name, members = validate_group(value(rng, 3), value(rng, 2))
        groups.set_group(rng.choice(["g1", "g2", "g3"]), name, members)
    except ValueError:
        pass
    try:
        groups.update_instance(rng.choice(["i1", "i2", "i3", value(rng, 4)]),
                               host=rng.choice(["h1", value(rng, 4)]))
    except ValueError:
        pass
    for grp in groups.all_groups():
        json.dumps(groups.to_dict(grp)).encode("utf-8")  # the REST API can show it
        json.dumps(groups.status(grp.members[0] if grp.members else "i1")).encode("utf-8")


def t_nova(rng: random.Random, _: Any) -> None:
    body: Any = value(rng)
    if rng.random() < 0.3:
        body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(body, default=str)})
    try:
        ch = nn.parse(body)
    except nn.NotificationError:
        return
    if ch is not None:
        nn.peer_notification(ch)


class FramingState:
    def __init__(self) -> None:
        self.dec = framing.LineDecoder(512)


def t_framing(rng: random.Random, st: FramingState) -> None:
    r = rng.random()
    if r < 0.5:
        data = framing.encode(obj(rng)) if rng.random() < 0.7 else \
            json.dumps(value(rng), default=str).encode("utf-8", "surrogatepass")
    else:
        data = rng.randbytes(rng.randint(0, 80)) if r < 0.8 else \
            rng.choice([b"\n", b"[" * 600, b"\xff", b"{", b"}\n", b"x" * 700])
    for i in range(0, len(data), rng.randint(1, 64)):
        for out in st.dec.feed(data[i:i + 64]):
            check(isinstance(out, (dict, framing.FrameError)), "decoder output type")
        check(st.dec.buffered <= st.dec.max_size, "decoder memory bound")


class GuestSt:
    def __init__(self) -> None:
        self.s = g.initial(g.GuestConfig(invocation_id=7, name="vm", interval_ms=1000))
        self.now = 0.0


GOOD_HOST = [hb.build_init_ack(sequence=1, invocation_id=7),
             hb.build_challenge(sequence=2, heartbeat_challenge=99),
             hb.build_nack(sequence=3, invocation_id=7, log_msg="who?"),
             hb.build_action_notify(sequence=4, invocation_id=5, event_type="stop",
                                    notification_type="revocable", timeout_ms=1000)]


def t_guest(rng: random.Random, st: GuestSt) -> None:
    r = rng.random()
    st.now += rng.random() * 2
    text = rng.choice(TEXT)
    if r < 0.6:
        msg = mutate(rng, rng.choice(GOOD_HOST)) if rng.random() < 0.8 else obj(rng)
        ev: Any = g.Received(msg, g.Health(rng.random() < 0.7, rng.choice(["", "bogus"]), text))
    else:
        ev = rng.choice([g.Start(), g.Tick(), g.Tick(), g.HostGone(),
                         g.VoteResult(5, rng.choice(hb.VOTE_RESULTS), text)])
    st.s, outs, deadline = g.step(st.s, ev, st.now)
    for o in outs:
        if isinstance(o, g.Send):
            check(hb.validate(o.msg) is None, f"guest sent an invalid message: {o.msg!r}")
    if st.s.phase in (g.REGISTERING, g.REGISTERED):
        check(deadline is not None, "guest registering/registered without a deadline")


class HostSt:
    def __init__(self, rng: random.Random) -> None:
        self.s = h.initial(h.HostConfig(), nonce_seed=rng.getrandbits(128))
        self.now = 0.0


GOOD_GUEST = [hb.build_init(sequence=1, invocation_id=7, name="vm", heartbeat_interval_ms=1000,
                            corrective_action="reboot"),
              hb.build_challenge_response(sequence=2, heartbeat_response=1,
                                          heartbeat_health="healthy", corrective_action="none"),
              hb.build_action_response(sequence=3, invocation_id=1, event_type="stop",
                                       notification_type="revocable", vote_result="accept"),
              hb.build_exit(sequence=4)]


def t_host(rng: random.Random, st: HostSt) -> None:
    st.now += rng.random() * 1.5
    r = rng.random()
    if r < 0.5:
        ev: Any = h.Received(mutate(rng, rng.choice(GOOD_GUEST)) if rng.random() < 0.8
                             else obj(rng))
    else:
        ev = rng.choice([h.Connected(), h.Tick(), h.Tick(), h.Tick(), h.Disconnected(),
                         h.Malformed("invalid-json")])
    st.s, outs, deadline = h.step(st.s, ev, st.now)
    for o in outs:
        if isinstance(o, h.Send):
            check(hb.validate(o.msg) is None, f"host sent an invalid message: {o.msg!r}")


class SgSt:
    def __init__(self) -> None:
        self.host = sgsession.session(sgsession.SessionConfig(instance="i-1", rate_per_s=50.0,
                                                              burst=20))
        self.client = sgclient.client()
        self.now = 0.0


def t_servergroup(rng: random.Random, st: SgSt) -> None:
    st.now += rng.random() * 0.2
    msg = obj(rng)
    if rng.random() < 0.6:
        msg = sgwire.wrap(mutate(rng, rng.choice([
            {"version": 2, "msg_type": "broadcast", "data": "hi"},
            {"version": 2, "msg_type": "status_query", "seq": 1},
            {"version": 2, "msg_type": "status_response", "seq": 1, "data": {}},
            {"version": 2, "msg_type": "status_response_done", "seq": 1},
            {"version": 2, "msg_type": "nack", "orig_msg_type": "status_query"}])))
    st.host, outs = sgsession.session_step(st.host, sgsession.Received(msg), st.now)
    for o in outs:
        if isinstance(o, sgsession.ToController):
            check(o.payload["source_instance"] == "i-1", "source_instance not stamped")
    check(0 <= st.host.tokens <= 20, "bucket out of bounds")
    ev: Any = sgclient.Received(msg)
    if rng.random() < 0.2:
        ev = rng.choice([sgclient.Broadcast(rng.choice(TEXT)), sgclient.StatusRequest(rng.choice(
            [0.5, 2.0, float("nan"), float("inf"), -1.0])), sgclient.Tick()])
    st.client, outs, deadline = sgclient.client_step(st.client, ev, st.now)
    check(len(st.client.pending) <= st.client.max_pending, "client pending unbounded")
    check(deadline is None or math.isfinite(deadline), "client deadline not finite")


class PairSt:
    def __init__(self) -> None:
        self.s = sb.initial(sb.PairConfig(me="instance-x", peer="instance-y", nonce="n"), 0.0)
        self.now = 0.0


def t_splitbrain(rng: random.Random, st: PairSt) -> None:
    st.now += rng.random()
    r = rng.random()
    if r < 0.6:
        v = value(rng)
        ev: Any = sb.PeerMessage(rng.choice(["instance-y", "instance-z"]),
                                 json.dumps(v, default=str) if rng.random() < 0.8 else str(v))
    elif r < 0.8:
        ev = sb.report_from_notification(obj(rng)) or sb.Tick()
    else:
        ev = sb.StatusAnswer([m for m in [value(rng)] if isinstance(m, dict)],
                             rng.random() < 0.5, st.s.query_id)
    st.s, _, deadline = sb.step(st.s, ev, st.now)
    check(deadline > st.now, "pair machine deadline not in the future")


# name -> (run one input, make its state, inputs per state before a fresh one)
TARGETS: Dict[str, Tuple[Callable[[random.Random, Any], None],
                         Callable[[random.Random], Any], int]] = {
    "controller validators": (t_validators, lambda r: None, 1),
    "REST strict JSON": (t_rest_json, lambda r: None, 1),
    "server-group membership": (t_server_groups, lambda r: ServerGroups(), 50),
    "Nova notification parser": (t_nova, lambda r: None, 1),
    "line framing": (t_framing, lambda r: FramingState(), 200),
    "guest heartbeat machine": (t_guest, lambda r: GuestSt(), 300),
    "host heartbeat machine": (t_host, HostSt, 300),
    "server-group session+client": (t_servergroup, lambda r: SgSt(), 300),
    "split-brain pair machine": (t_splitbrain, lambda r: PairSt(), 300),
}


def work(args: Tuple[str, int, int]) -> Tuple[str, int, float, Dict[str, str]]:
    name, seed, n = args
    run, make, per_state = TARGETS[name]
    rng = random.Random(seed)
    findings: Dict[str, str] = {}
    state = make(rng)
    t0 = time.perf_counter()
    for i in range(n):
        if i % per_state == 0:
            state = make(rng)
        try:
            run(rng, state)
        except Exception as exc:  # a finding: what was raised, where, and how to get it back
            last = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {Path(last.filename).name}:{last.lineno}"
            if key not in findings:  # the job's seed and input number bring it back
                findings[key] = f"{name}: {key}: {str(exc)[:300]} (job seed {seed}, input {i})"
            state = make(rng)
    return name, n, time.perf_counter() - t0, findings


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=10_000_000, help="inputs in all")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=None, help="default: a fresh one")
    ap.add_argument("--only", default=None, help="one target (a substring of its name)")
    ap.add_argument("--chunk", type=int, default=50_000, help="inputs per work unit")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().getrandbits(32)
    names = [n for n in TARGETS if a.only is None or a.only in n]
    per_target = -(-a.inputs // len(names))  # at least --inputs in all
    jobs = []
    for k, name in enumerate(names):
        left, j = per_target, 0
        while left > 0:
            n = min(a.chunk, left)
            jobs.append((name, seed * 1000003 + k * 7919 + j, n))
            left -= n
            j += 1
    print(f"fuzz campaign: {per_target * len(names):,} inputs over {len(names)} targets, "
          f"{a.workers} workers, seed {seed}", flush=True)
    totals: Dict[str, List[float]] = {n: [0, 0.0] for n in names}
    findings: Dict[str, str] = {}  # one line per distinct defect (exception and place)
    t0 = time.monotonic()
    with multiprocessing.Pool(a.workers) as pool:
        for name, n, secs, found in pool.imap_unordered(work, jobs):
            totals[name][0] += n
            totals[name][1] += secs
            for key, text in found.items():
                findings.setdefault(f"{name} {key}", text)
    wall = time.monotonic() - t0
    print(f"{'target':32} {'inputs':>12} {'cpu s':>8} {'inputs/s':>10}")
    for name in names:
        n, secs = totals[name]
        print(f"{name:32} {int(n):>12,} {secs:>8.1f} {n / secs if secs else 0:>10,.0f}")
    total = sum(int(v[0]) for v in totals.values())
    print(f"{'all':32} {total:>12,}   wall {wall:.1f} s ({total / wall:,.0f} inputs/s)")
    print(f"findings: {len(findings)}")
    for f in findings.values():
        print("  " + f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
