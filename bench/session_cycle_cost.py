"""CPU of one heartbeat cycle inside the compute agent, without sockets or scheduling noise.

One ``InstanceSession`` (channel, session, host machine, framing, timers) on
a stand-in transport, driven by a stand-in clock: per cycle the due timer
fires (a challenge goes out) and the guest's answer is fed in as the bytes a
socket read would give. The guest's side (decoding the challenge, building
the answer) is timed apart and left out. What is left out on purpose: the
kernel (send, recv, epoll) and asyncio's own read/write path, which
bench/heartbeat_scale.py measures with real sockets; what this gives is a
figure a loaded machine barely moves, to compare code.

    python bench/session_cycle_cost.py [--cycles 30000] [--repeat 3] [--tree DIR]

--tree DIR also measures another checkout (``git worktree add /tmp/oldtree
<rev>``), alternating with this one, each in its own process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
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


async def _measure(cycles: int) -> dict[str, Any]:
    import nfvha.compute.channel as channel_mod
    import nfvha.compute.session as session_mod
    from nfvha.protocol import heartbeat as hb
    from nfvha.protocol import host
    from nfvha.protocol.framing import LineDecoder, encode

    clock = _Clock()
    session_mod.time = clock  # type: ignore[assignment]
    channel_mod.time = clock  # type: ignore[assignment]
    try:
        import nfvha.compute.timers as timers_mod  # the shared timers (heap, then wheel)
        timers_mod.time = clock  # type: ignore[assignment]
    except ImportError:
        pass  # an older tree: asyncio timers, which follow loop.time
    loop = asyncio.get_running_loop()
    loop.time = clock.monotonic  # type: ignore[method-assign]

    class Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.out: list[bytes] = []

        def write(self, data: Any) -> None:
            self.out.append(bytes(data))

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

        def is_closing(self) -> bool:
            return False

        def set_write_buffer_limits(self, high: int | None = None,
                                    low: int | None = None) -> None:
            pass

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def abort(self) -> None:
            pass

    s = session_mod.InstanceSession("00000000-0000-0000-0000-000000000001", "/nowhere",
                                    host.HostConfig(min_interval_ms=100), 50)
    transport = Transport()
    s.connection_made(transport)

    def feed(data: bytes) -> None:
        buf = s.get_buffer(-1)
        buf[:len(data)] = data
        s.buffer_updated(len(data))

    feed(encode(hb.build_init(sequence=1, invocation_id=7, name="bench",
                              heartbeat_interval_ms=100, corrective_action="reboot")))
    decoder = LineDecoder(4096)
    guest_s = 0.0
    t0 = time.process_time()
    for i in range(cycles):
        g0 = time.process_time()
        sent = [m for data in transport.out for m in decoder.feed(data)]
        transport.out.clear()
        nonce = [m for m in sent if m["msg_type"] == hb.CHALLENGE][-1]["heartbeat_challenge"]
        answer = encode(hb.build_challenge_response(
            sequence=i + 2, heartbeat_response=nonce, heartbeat_health="healthy",
            corrective_action="reboot"))
        guest_s += time.process_time() - g0
        clock.t += 0.001  # the answer comes 1 ms later
        feed(answer)
        assert s._timer_at is not None and s._timer is not None
        clock.t = s._timer_at  # the next challenge is due
        # it fires: off the timer structure (as the loop would take it), then the callback
        s._timer.cancel()
        s._on_timer()
        if i % 100 == 99:
            await asyncio.sleep(0)  # the loop turns now and then (as it would)
    total = time.process_time() - t0
    assert s.counters["violations"] == 0 and s.state.phase == host.ENABLED
    return {"us_per_cycle": 1e6 * (total - guest_s) / cycles, "answers": len(s.rtt_ms)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=30000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tree", type=Path, default=None, help="also measure this checkout")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.cycles))))
        return 0
    trees = [ROOT] if args.tree is None else [args.tree.resolve(), ROOT]
    runs: dict[Path, list[float]] = {t: [] for t in trees}
    for _ in range(args.repeat):
        for tree in trees:
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child",
                 "--cycles", str(args.cycles)], cwd=tree, check=True, capture_output=True,
                text=True, env={**os.environ, "PYTHONPATH": str(tree)})
            runs[tree].append(json.loads(out.stdout)["us_per_cycle"])
    for tree in trees:
        xs = runs[tree]
        name = "this checkout" if tree == ROOT else str(tree)
        print(f"{name}: {statistics.median(xs):.1f} µs per cycle (median of {len(xs)}: "
              f"{', '.join(f'{x:.1f}' for x in xs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
