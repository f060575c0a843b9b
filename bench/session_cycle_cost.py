"""CPU of one heartbeat cycle inside the compute agent, without sockets or scheduling noise.

``--sessions`` ``InstanceSession`` objects (channel, session, host machine,
framing, timers) on stand-in transports, driven by a stand-in clock and
served in turn: per cycle the guest's answer is fed in as the bytes a socket
read would give, 1 ms after its challenge, and the shared timers fire what
is due in between (the next challenges), all in time order on the stand-in
clock. The guest's side (cutting the nonce out, an answer from a template)
and the run's own bookkeeping are timed apart and subtracted; nothing reads
a clock per cycle. What is left out on purpose: the
kernel (send, recv, epoll) and asyncio's own read/write path, which
bench/heartbeat_scale.py measures with real sockets; what this gives is a
figure a loaded machine barely moves, to compare code.

Since the C engine (compute/steadyloop.py) the steady path runs only on the
loop's real guest sockets, so on these stand-ins every session stays on the
Python machine: the figure is what a cycle costs off the steady path (a guest
that answers late, the first cycles after registering, an observed agent).
bench/heartbeat_scale.py measures the steady path.

    python bench/session_cycle_cost.py [--cycles 100000] [--sessions 1000] [--repeat 3]
        [--tree DIR]

--tree DIR also measures another checkout (``git worktree add /tmp/oldtree
<rev>``), alternating with this one, each in its own process.
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class _Clock:
    """time.monotonic for the measured modules; everything else real."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


async def _measure(cycles: int, sessions: int) -> dict[str, Any]:
    import nfvha.compute.channel as channel_mod
    import nfvha.compute.session as session_mod
    from nfvha.protocol import heartbeat as hb
    from nfvha.protocol import host
    from nfvha.protocol.framing import encode

    clock = _Clock()
    session_mod.time = clock  # type: ignore[assignment]
    channel_mod.time = clock  # type: ignore[assignment]
    try:
        import nfvha.compute.timers as timers_mod  # the shared timers (heap, then wheel)
        timers_mod.time = clock  # type: ignore[assignment]
    except ImportError:
        raise SystemExit("this tree has no compute/timers.py: not measurable here") from None
    loop = asyncio.get_running_loop()
    loop.time = clock.monotonic  # type: ignore[method-assign]

    tm = timers_mod.for_loop(loop)
    sent: list[Any] = []  # transports a challenge was written to, in order

    class Transport(asyncio.Transport):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index
            self.out: list[bytes] = []

        def write(self, data: Any) -> None:
            data = bytes(data)
            self.out.append(data)
            if b'"msg_type":"challenge"' in data:
                sent.append(self)

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

        def is_closing(self) -> bool:
            return False

        def is_reading(self) -> bool:
            return True

        def set_write_buffer_limits(self, high: int | None = None,
                                    low: int | None = None) -> None:
            pass

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def abort(self) -> None:
            pass

    answer = (b'\n{"version":%d,"revision":1,"msg_type":"challenge_response","sequence":%%d,'
              b'"heartbeat_response":%%d,"heartbeat_health":"healthy",'
              b'"corrective_action":"reboot","log_msg":""}\n' % hb.VERSION)
    key = b'"heartbeat_challenge":'

    def guest(transport: Transport, i: int) -> bytes:
        # the guest's side: the nonce cut out of the challenge, the answer from a
        # template (cheap, and timed apart below)
        data = transport.out[-1]
        transport.out.clear()
        k = data.index(key) + len(key)
        return answer % (i + 2, int(data[k:data.index(b"}", k)]))

    def feed(s: Any, data: bytes) -> None:
        if hasattr(s, "data_received"):
            s.data_received(data)
        else:  # an older tree: a BufferedProtocol only
            buf = s.get_buffer(-1)
            buf[:len(data)] = data
            s.buffer_updated(len(data))

    pairs = []
    for n in range(sessions):
        s = session_mod.InstanceSession(f"00000000-0000-0000-0000-{n:012d}", "/nowhere",
                                        host.HostConfig(min_interval_ms=100), 50)
        transport = Transport(n)
        s.connection_made(transport)
        feed(s, encode(hb.build_init(sequence=1, invocation_id=7, name="bench",
                                     heartbeat_interval_ms=100, corrective_action="reboot")))
        pairs.append((s, transport))
    # A discrete-event run in time order: each guest answers 1 ms after its
    # challenge; between answers the shared timers fire what is due, as the
    # loop would (its handle is cancelled and the pass run at the wake time).
    answers: list[tuple[float, int, int]] = []
    seq = itertools.count()

    def queue_answers() -> None:
        for tr in sent:
            heapq.heappush(answers, (clock.t + 0.001, next(seq), tr.index))
        sent.clear()

    queue_answers()
    done = 0
    t0 = time.process_time()
    while done < cycles:
        if answers and answers[0][0] <= tm._wake_at:
            at, _, index = heapq.heappop(answers)
            clock.t = at
            s, transport = pairs[index]
            feed(s, guest(transport, done))
            done += 1
        else:
            # (an older tree's heap could wake a float's last bit before an
            # entry's time and fire nothing: then the clock moves by that bit)
            clock.t = max(tm._wake_at, math.nextafter(clock.t, math.inf))
            handle = tm._handle()
            if handle is not None:
                handle.cancel()
            tm._run()
        queue_answers()
    total = time.process_time() - t0
    # what the guest's side and this loop's own bookkeeping cost, to subtract
    challenge = encode(hb.build_challenge(sequence=1, heartbeat_challenge=12345))
    transport = Transport(0)
    g0 = time.process_time()
    for i in range(done):
        transport.out.append(challenge)
        heapq.heappush(answers, (float(i), next(seq), 0))
        heapq.heappop(answers)
        guest(transport, i)
    guest_s = time.process_time() - g0
    bad = [s.uuid for s, _ in pairs if s.counters["violations"] or s.state.phase != host.ENABLED
           or s.counters.get("internal_errors")]
    assert not bad, f"{len(bad)} sessions not enabled, with violations or internal errors"
    return {"us_per_cycle": 1e6 * (total - guest_s) / done,
            "answers": sum(len(s.rtt_ms) for s, _ in pairs),
            "faults": sum(s.counters["faults"] for s, _ in pairs),
            # sessions on the C steady path at the end (compute/steady.py)
            "steady": sum(getattr(s, "on_steady_path", False) for s, _ in pairs)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=100000)
    p.add_argument("--sessions", type=int, default=1000,
                   help="sessions served in turn (their state is not all in cache)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tree", type=Path, default=None, help="also measure this checkout")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.cycles, args.sessions))))
        return 0
    trees = [ROOT] if args.tree is None else [args.tree.resolve(), ROOT]
    runs: dict[Path, list[float]] = {t: [] for t in trees}
    steady: dict[Path, Any] = {}
    for _ in range(args.repeat):
        for tree in trees:
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child",
                 "--cycles", str(args.cycles), "--sessions", str(args.sessions)],
                cwd=tree, check=True, capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": str(tree)})
            result = json.loads(out.stdout)
            runs[tree].append(result["us_per_cycle"])
            steady[tree] = result.get("steady", 0)
    for tree in trees:
        xs = runs[tree]
        name = "this checkout" if tree == ROOT else str(tree)
        print(f"{name}: {statistics.median(xs):.1f} µs per cycle (median of {len(xs)}: "
              f"{', '.join(f'{x:.1f}' for x in xs)}; {steady[tree]} of {args.sessions} "
              f"sessions on the C steady path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
