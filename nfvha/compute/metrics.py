"""Prometheus metrics of the compute agent ([compute] metrics_listen),
computed at scrape time only.

Nothing here touches the per-message hot path: the agent keeps the counters
and sample rings it keeps anyway; a scrape reads them. A scrape runs in the
HTTP server's thread (prometheus_client.start_http_server), so the event loop
never waits on a slow client. The agent's dicts are mutated by the loop
(sessions come and go), so the thread does not iterate them: it asks the
loop for a snapshot (``loop.call_soon_threadsafe`` + a concurrent future,
at most ``SNAPSHOT_TIMEOUT_S``) that copies plain numbers and, per session
and ring, a strided slice of its last ``WINDOW`` rtt / lateness samples (an
array slice each, no Python float per sample). Quantiles are computed
afterwards in the scrape thread over at most ``SAMPLE_BUDGET`` samples per
ring: a sort holds the GIL, and sorting every sample of a thousand guests
would stall the loop for tens of ms. If the loop does not answer in time
(blocked, or stopped) the scrape yields ``nfvha_agent_up 0`` besides the
process metrics.

The series are ``nfvha_agent_*``, not ``nfvha_compute_*``: the controller
already exports ``nfvha_compute_up{host}`` (its view of the agent), and the
alerting rules take ``max by (host)`` over it; an agent saying 1 for itself
under that name would hide the controller's 0.

Cost: ``python -m nfvha.compute.metrics [--sessions N]`` builds N fake
sessions with full rings and prints what a scrape costs (the README quotes
it).
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import math
import statistics
import time
from array import array
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from nfvha.protocol import host as hostsm

PREFIX = "nfvha_agent_"
PHASES = (hostsm.WAITING, hostsm.ENABLED, hostsm.DISABLED, hostsm.FAILED)
QUANTILES = (0.5, 0.9, 0.99)
WINDOW = 128  # newest samples per session and ring: ~13 s at a 100 ms interval
SAMPLE_BUDGET = 8192  # samples per ring and scrape: the sort (GIL held) stays ~1-2 ms
SNAPSHOT_TIMEOUT_S = 2.0


def _tail(samples: Any, n: int, step: int) -> array:
    """Every `step`-th of the newest `n` values of a compute.samples.Samples
    ring, newest first (order does not matter to a quantile): one strided
    slice of its array, two where the newest `n` wrap around its end."""
    data, nxt = samples._data, samples._next
    out = data[nxt - 1:_stop(nxt - 1 - n):-step] if nxt else data[:0]
    if nxt < n and samples._full:  # the rest from the end of the array (the older ones)
        last = len(data) - 1
        out += data[last:_stop(last - min(n - nxt, len(data) - nxt)):-step]
    return out


def _stop(index: int) -> int | None:
    # a negative stop would count from the end: "down to the first" is None
    return index if index >= 0 else None


def snapshot(agent: Any, window: int = WINDOW,
             budget: int = SAMPLE_BUDGET) -> dict[str, Any]:
    """What a scrape needs, copied. Runs on the agent's loop."""
    started = time.perf_counter()
    sessions = list(agent.sessions.values())
    step = max(1, math.ceil(len(sessions) * window / budget))
    phases = dict.fromkeys(PHASES, 0)
    totals: dict[str, int] = {}
    starved = connected = 0
    rtt: list[array] = []
    late: list[array] = []
    for s in sessions:
        phases[s.phase] = phases.get(s.phase, 0) + 1
        starved += s.starved
        connected += s.transport is not None
        for key, value in s.counters.items():
            totals[key] = totals.get(key, 0) + value
        rtt.append(_tail(s.rtt_ms, window, step))
        late.append(_tail(s.late_ms, window, step))
    outbox = agent.outbox
    return {"sessions": len(sessions), "connected": connected, "phases": phases,
            "session_counters": totals, "starved": starved, "counters": dict(agent.counters),
            "faults_pending": outbox.pending, "faults_delivered": outbox.delivered,
            "faults_refused": outbox.refused, "rtt": rtt, "late": late, "step": step,
            "loop_seconds": time.perf_counter() - started}


def _quantiles(chunks: list[array]) -> tuple[int, dict[float, float]]:
    values: list[float] = []
    for chunk in chunks:
        values.extend(chunk)
    if not values:
        return 0, {}
    values.sort()
    n = len(values)
    # nearest rank
    return n, {q: values[min(n - 1, max(0, math.ceil(q * n) - 1))] for q in QUANTILES}


# per-session counters (compute/channel.py, compute/session.py), summed over
# the sessions present: gauges, since a guest that goes takes its share along
SESSION_COUNTERS = (
    ("session_input_dropped", "dropped", "Guest messages dropped by the rate limit"),
    ("session_nacks", "nacks", "Rate-limit nacks sent to guests"),
    ("session_bytes_in", "bytes_in", "Bytes read from guest channels"),
    ("session_read_pauses", "read_pauses", "Reads paused by the byte budget"),
    ("session_write_dropped", "write_dropped", "Writes to guests dropped at the high-water "
     "mark"),
    ("session_connects", "connects", "Guest channel connections made"),
    ("session_internal_errors", "internal_errors", "Internal errors in sessions (each cost "
     "its channel a reconnect)"))


class AgentCollector:
    """A prometheus-client custom collector over one ComputeAgent."""

    def __init__(self, agent: Any, loop: asyncio.AbstractEventLoop | None = None,
                 timeout_s: float = SNAPSHOT_TIMEOUT_S) -> None:
        self.agent = agent
        self.loop = loop
        self.timeout_s = timeout_s
        self.host = agent.host

    def _snapshot(self) -> dict[str, Any] | None:
        loop = self.loop
        if loop is None:  # the caller is the agent's loop (measure, tests)
            return snapshot(self.agent)
        if loop.is_closed():
            return None
        fut: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return  # the scrape gave up on us already
            try:
                fut.set_result(snapshot(self.agent))
            except BaseException as e:  # noqa: BLE001 - handed to the scrape thread
                fut.set_exception(e)
        try:
            loop.call_soon_threadsafe(run)
            return fut.result(self.timeout_s)
        except (RuntimeError, concurrent.futures.TimeoutError):  # closed meanwhile, or late
            fut.cancel()
            return None

    def describe(self) -> list[Any]:
        return []  # no scrape at registration

    def collect(self) -> Iterator[Any]:
        started = time.perf_counter()
        host = self.host
        up = GaugeMetricFamily(PREFIX + "up", "1 if the agent's event loop answered this "
                               "scrape in time, 0 if it is blocked or stopped",
                               labels=["host"])
        snap = self._snapshot()
        up.add_metric([host], 0 if snap is None else 1)
        yield up
        if snap is None:
            return

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(PREFIX + name, doc, labels=["host"])
            g.add_metric([host], value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(PREFIX + name, doc, labels=["host"])
            c.add_metric([host], value)
            return c

        yield gauge("sessions", "Heartbeat sessions (guests' channels) known", snap["sessions"])
        yield gauge("connected", "Heartbeat sessions with their channel open",
                    snap["connected"])
        phases = GaugeMetricFamily(PREFIX + "guests", "Guests by phase of the host heartbeat "
                                   "machine", labels=["host", "phase"])
        for phase, n in sorted(snap["phases"].items()):
            phases.add_metric([host, str(phase)], n)
        yield phases
        yield gauge("starved", "Guests the host starves of CPU now (deadlines extended, "
                    "no fault)", snap["starved"])
        c = snap["counters"]
        yield counter("faults", "Faults sent to the outbox (all kinds)", c.get("faults", 0))
        yield counter("violations", "Protocol violations by guests", c.get("violations", 0))
        yield counter("state_changes", "Guest state changes cast to the controller",
                      c.get("state_changes", 0))
        yield counter("starved_events", "Times a guest became starved of CPU", c.get("starved", 0))
        yield counter("losses_explained", "Channel losses the instance source explained "
                      "as no fault", c.get("losses_explained", 0))
        yield counter("recoveries", "Recovery actions carried out", c.get("recoveries", 0))
        yield counter("resyncs", "Full instance lists sent on a controller's resync",
                      c.get("resyncs", 0))
        yield gauge("faults_pending", "Faults in the outbox not acknowledged by a "
                    "controller yet", snap["faults_pending"])
        yield counter("faults_delivered", "Faults acknowledged by a controller",
                      snap["faults_delivered"])
        yield counter("faults_refused", "Faults a controller refused as malformed (dropped)",
                      snap["faults_refused"])
        totals = snap["session_counters"]
        for name, key, doc in SESSION_COUNTERS:
            yield gauge(name, doc + ", summed over the sessions present (drops when a "
                        "guest goes)", totals.get(key, 0))
        window = (f"over each session's newest {WINDOW} samples (with many sessions every "
                  f"n-th of them, at most {SAMPLE_BUDGET} in all)")
        for name, chunks, doc in (
                ("rtt_seconds", snap["rtt"], "Challenge round trip (challenge written -> "
                 "valid answer read)"),
                ("timer_lag_seconds", snap["late"], "How late the challenge timers fired "
                 "(the event loop's scheduling delay)")):
            count, qs = _quantiles(chunks)
            g = GaugeMetricFamily(PREFIX + name, f"{doc}, {window}",
                                  labels=["host", "quantile"])
            for q, v in qs.items():
                g.add_metric([host, str(q)], v / 1000.0)
            yield g
            yield gauge(name.replace("_seconds", "_samples"),
                        f"Samples behind {PREFIX}{name}", count)
        yield gauge("scrape_loop_seconds", "Time this scrape held the agent's event loop "
                    "(the snapshot)", snap["loop_seconds"])
        yield gauge("scrape_seconds", "Time this scrape took in the agent collector, "
                    "snapshot and quantiles", time.perf_counter() - started)


class _WithHost:
    """Another collector's metrics with a `host` label added."""

    def __init__(self, inner: Any, host: str) -> None:
        self.inner = inner
        self.host = host

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        for family in self.inner.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                out.add_sample(sample.name, {**sample.labels, "host": self.host},
                               sample.value, sample.timestamp, sample.exemplar)
            yield out


def registry_for(agent: Any, loop: asyncio.AbstractEventLoop | None = None,
                 timeout_s: float = SNAPSHOT_TIMEOUT_S) -> CollectorRegistry:
    """A registry of its own: the process (CPU seconds, RSS, fds), the
    platform (Python version), both with the agent's host label, and the agent."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WithHost(ProcessCollector(registry=None), agent.host))
    registry.register(_WithHost(PlatformCollector(registry=None), agent.host))
    registry.register(AgentCollector(agent, loop, timeout_s))
    return registry


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6: `[addr]:port`) -> (host, port); ValueError saying why not."""
    host, sep, port = listen.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{listen!r} is not host:port (e.g. 0.0.0.0:8781, [::]:8781)")
    return host, int(port)


class MetricsServer:
    """GET /metrics on `listen` (host:port) in a thread of its own; scrapes
    read the agent through `loop` (default: the running one)."""

    def __init__(self, agent: Any, listen: str, loop: asyncio.AbstractEventLoop | None = None,
                 timeout_s: float = SNAPSHOT_TIMEOUT_S) -> None:
        from prometheus_client import start_http_server

        addr, port = parse_listen(listen)
        self.registry = registry_for(agent, loop or asyncio.get_running_loop(), timeout_s)
        try:
            self.server, self.thread = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:  # in use, not an address of this host, unresolvable
            raise ValueError(f"{listen!r}: cannot listen there: {exc}") from exc
        self.port: int = self.server.server_address[1]
        self.url = f"http://{listen.rpartition(':')[0]}:{self.port}/metrics"

    def stop(self) -> None:
        """Blocks up to the server's poll interval (0.5 s): call it off the loop."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -- what a scrape costs (python -m nfvha.compute.metrics) ------------------------------

class _FakeSession:
    def __init__(self, i: int) -> None:
        import random

        from nfvha.compute.samples import Samples
        from nfvha.compute.session import SAMPLES

        self.state = hostsm.HostState(hostsm.HostConfig(), phase=hostsm.ENABLED)
        self.transport = object()
        self.counters = {"bytes_in": 100_000 + i, "read_pauses": 0, "write_dropped": 0,
                         "internal_errors": 0, "connects": 1, "violations": 0,
                         "dropped": 0, "nacks": 0, "faults": 0}
        self.rtt_ms = Samples(SAMPLES)
        self.late_ms = Samples(SAMPLES)
        for _ in range(SAMPLES + 17):  # full, wrapped
            self.rtt_ms.append(random.lognormvariate(0.0, 0.5))
            self.late_ms.append(random.expovariate(2.0))


class _FakeOutbox:
    pending = delivered = refused = 0


class _FakeAgent:
    def __init__(self, n: int) -> None:
        self.host = "measure"
        self.sessions = {f"uuid-{i}": _FakeSession(i) for i in range(n)}
        self.counters = dict.fromkeys(
            ("faults", "violations", "state_changes", "starved", "losses_explained",
             "recoveries", "resyncs"), 0)
        self.outbox = _FakeOutbox()


async def measure(sessions: int = 1000, scrapes: int = 30) -> dict[str, Any]:
    """Scrapes `scrapes` times over real HTTP, one at a time, an agent of
    `sessions` fake sessions with full rings, while a 1 ms ticker on the loop
    records how late it runs: the scrape's cost to the loop."""
    import urllib.request

    loop = asyncio.get_running_loop()
    agent = _FakeAgent(sessions)
    server = MetricsServer(agent, "127.0.0.1:0", loop)
    lag_ms: list[float] = []

    async def ticker() -> None:
        while True:
            t = loop.time()
            await asyncio.sleep(0.001)
            lag_ms.append((loop.time() - t - 0.001) * 1000.0)

    def scrape() -> tuple[float, str]:
        t = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as r:
            body = r.read().decode()
        return (time.perf_counter() - t) * 1000.0, body

    def value(body: str, name: str) -> float:
        line = next(x for x in body.splitlines() if x.startswith(name + "{"))
        return float(line.rsplit(" ", 1)[1]) * 1000.0

    tick = loop.create_task(ticker())
    try:
        await asyncio.sleep(1.0)
        idle = max(lag_ms)
        wall, held, agent_ms, worst = [], [], [], []
        for _ in range(scrapes):
            lag_ms.clear()
            ms, body = await asyncio.to_thread(scrape)
            wall.append(ms)
            held.append(value(body, PREFIX + "scrape_loop_seconds"))
            agent_ms.append(value(body, PREFIX + "scrape_seconds"))
            worst.append(max(lag_ms, default=0.0))
            await asyncio.sleep(0.05)
    finally:
        tick.cancel()
        await asyncio.to_thread(server.stop)

    def p(xs: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(xs), 2), "max": round(max(xs), 2)}
    return {"sessions": sessions, "scrapes": scrapes, "bytes": len(body),
            "scrape_ms": p(wall), "agent_collector_ms": p(agent_ms),
            "loop_held_ms": p(held), "loop_lag_during_scrape_ms": p(worst),
            "loop_lag_idle_max_ms": round(idle, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description="What one /metrics scrape of the compute "
                                 "agent costs, over fake sessions with full rings")
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=30)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(measure(args.sessions, args.scrapes))))


if __name__ == "__main__":
    main()
