"""Host failure: tell a dead compute host from a dead compute agent.

A silent agent (hosts.py) alone is never a VM fault: a crashed or hung
agent on a live host must not make anyone evacuate. A host is *down* only
when its agent is silent AND a second, independent signal agrees:

- ``probe``: the host no longer answers on its management address. A TCP
  connect to ``[hosts] probe_port``, ``probe_count`` times; any answer
  (accepted *or refused*: a RST comes from a running kernel) means the host
  is up, only silence or "unreachable" on every attempt means down.
- ``nova``: Nova lists the host's nova-compute service down (or forced
  down); "up" counts only if nova-compute reported after the agent's last
  word (Nova keeps a dead service up for its service_down_time).

A signal that says *up* wins (agent only: the host stays "silent", no
fault); one that cannot tell (no address known, Nova unreachable) counts
for nothing. While the agent stays silent and the host answers, the host
is checked again every ``recheck_interval_s`` (the agent may have died
first and the host after it).

Then every VM the store has on that host (what its agent last reported)
becomes one ``host_down`` fault event, all stored and handed to the sinks
at once (``emit``), so they go through the same leases, retries and
recovery as any fault. One event per VM, not per host: every sink but
Masakari acts on an instance (Nova reset-state or evacuate, Doctor,
Vitrage, Aodh, a webhook), the recovery's loop protection is per instance,
and the event list shows what happened to each VM; the Masakari sink makes
one COMPUTE_HOST notification per host out of them (Masakari evacuates the
whole host itself).

Event ids are derived from (host, instance, the time the store last wrote
the instance's record), so several controllers that see the same host die,
or a controller restarted meanwhile, store each event once.

HostDownRules is pure bookkeeping (time is an argument); HostFailureMonitor
does the I/O (probes, Nova, the store, emitting).
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import time
import uuid as uuidlib
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable, Optional

from nfvha.controller.timeutil import iso, parse_utc, utcnow

LOG = logging.getLogger(__name__)

HOST_DOWN_KIND = "host_down"
HOST_DOWN_NAMESPACE = uuidlib.UUID("2f7c0b8e-3c55-5d0e-8f3b-6a1e4b9d7c11")

# what a signal says about the host
DOWN, UP, UNKNOWN = "down", "up", "unknown"
# a host's state in the rules
AGENT_UP, CHECKING, AGENT_ONLY, HOST_DOWN, HELD = (
    "agent_up", "checking", "agent_only", "host_down", "held")


def host_down_event_id(host: str, episode: str, instance_uuid: str) -> str:
    return str(uuidlib.uuid5(HOST_DOWN_NAMESPACE, f"{host}\n{episode}\n{instance_uuid}"))


# --- the decision, pure -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Check:
    """Ask every available signal about ``host`` (round ``round_id``)."""
    host: str
    round_id: int


@dataclasses.dataclass(frozen=True)
class Declare:
    """``host`` is down: report every VM on it."""
    host: str
    episode: str
    why: str


@dataclasses.dataclass(frozen=True)
class AgentOnly:
    """The agent is silent but the host is not shown down."""
    host: str
    why: str


@dataclasses.dataclass(frozen=True)
class Held:
    """The signals say down, but so many hosts at once that this controller
    more likely lost its own network: nothing is declared."""
    host: str
    why: str


Action = Any  # Check | Declare | AgentOnly | Held


@dataclasses.dataclass
class _Host:
    state: str = AGENT_UP
    episode: str = ""
    round_id: int = 0
    signals: tuple[str, ...] = ()
    verdicts: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    next_check: Optional[float] = None
    why: str = ""


class HostDownRules:
    """Which silent hosts are down. Inputs: the agent's transitions
    (``silent``/``up``), each signal's verdict for a round, and the time
    (``due``); outputs: the actions to carry out."""

    def __init__(self, recheck_interval_s: float = 5.0, max_down_fraction: float = 0.5,
                 guard_min_hosts: int = 3) -> None:
        self.recheck_interval_s = recheck_interval_s
        self.max_down_fraction = max_down_fraction
        self.guard_min_hosts = guard_min_hosts
        self.hosts: dict[str, _Host] = {}
        self._rounds = 0

    def state(self, host: str) -> str:
        h = self.hosts.get(host)
        return h.state if h is not None else AGENT_UP

    def why(self, host: str) -> str:
        h = self.hosts.get(host)
        return h.why if h is not None else ""

    def known(self, host: str) -> None:
        """A host that reports (counts in the isolation guard)."""
        self.hosts.setdefault(host, _Host())

    def silent(self, host: str, episode: str, signals: Iterable[str],
               now: float) -> list[Action]:
        """The agent of ``host`` went silent; ``signals`` are the second
        signals available for it (none: it can never be declared down)."""
        h = self.hosts.setdefault(host, _Host())
        if h.state != AGENT_UP:
            return []
        h.episode = episode
        return self._round(h, host, tuple(signals), now)

    def up(self, host: str) -> Optional[str]:
        """The agent reports again: the host is up, whatever was decided.
        Returns the state it leaves."""
        h = self.hosts.setdefault(host, _Host())
        old = h.state
        self.hosts[host] = _Host()
        return old

    def forget(self, host: str) -> None:
        self.hosts.pop(host, None)

    def _round(self, h: _Host, host: str, signals: tuple[str, ...],
               now: float) -> list[Action]:
        if not signals:
            h.state, h.next_check = AGENT_ONLY, None
            h.why = "no second signal configured for this host: a dead host cannot be " \
                    "told from a dead agent"
            return [AgentOnly(host, h.why)]
        self._rounds += 1
        h.state, h.round_id, h.signals, h.verdicts = CHECKING, self._rounds, signals, {}
        h.next_check = None
        return [Check(host, h.round_id)]

    def verdict(self, host: str, round_id: int, signal: str, verdict: str, detail: str,
                now: float) -> list[Action]:
        """What ``signal`` said in round ``round_id``; once every signal of
        the round has spoken, the decision."""
        h = self.hosts.get(host)
        if h is None or h.state != CHECKING or h.round_id != round_id \
                or signal not in h.signals:
            return []  # a late answer of a round that no longer counts
        h.verdicts[signal] = (verdict, detail)
        if len(h.verdicts) < len(h.signals):
            return []
        said = {s: v for s, (v, _) in h.verdicts.items()}
        text = "; ".join(f"{s}: {d}" for s, (_, d) in sorted(h.verdicts.items()))
        if UP in said.values() or DOWN not in said.values():
            h.state, h.next_check = AGENT_ONLY, now + self.recheck_interval_s
            h.why = ("host answers, agent only: " if UP in said.values()
                     else "signals cannot tell: ") + text
            return [AgentOnly(host, h.why)]
        down_now = sum(1 for o in self.hosts.values() if o.state == HOST_DOWN)
        tracked = len(self.hosts)
        if tracked >= self.guard_min_hosts and \
                down_now + 1 > self.max_down_fraction * tracked:
            h.state, h.next_check = HELD, now + self.recheck_interval_s
            h.why = (f"not declared: {down_now + 1} of {tracked} hosts would be down at "
                     f"once (max_down_fraction {self.max_down_fraction:g}): more likely "
                     f"this controller is cut off; {text}")
            return [Held(host, h.why)]
        h.state, h.next_check = HOST_DOWN, None
        h.why = text
        return [Declare(host, h.episode, text)]

    def due(self, now: float, signals_of: Callable[[str], Iterable[str]]) -> list[Action]:
        """Silent hosts whose recheck is due get a new round."""
        out: list[Action] = []
        for host, h in self.hosts.items():
            if h.state in (AGENT_ONLY, HELD) and h.next_check is not None \
                    and now >= h.next_check:
                out += self._round(h, host, tuple(signals_of(host)), now)
        return out


# --- the signals (I/O) ---------------------------------------------------------------
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EHOSTDOWN}


async def tcp_answers(address: str, port: int, timeout_s: float) -> tuple[str, str]:
    """One TCP connect: (UP, how) when the host answers (accept or refuse),
    (DOWN, why) when it does not (timeout, unreachable), (UNKNOWN, why) for
    anything that says nothing about the host (a name that does not
    resolve, no address of ours to send from)."""
    try:
        async with asyncio.timeout(timeout_s):
            _r, w = await asyncio.open_connection(address, port)
    except ConnectionRefusedError:
        return UP, "refused (its kernel answers)"
    except (asyncio.TimeoutError, TimeoutError):
        return DOWN, f"no answer within {timeout_s:g} s"
    except OSError as exc:
        if exc.errno in _UNREACHABLE:
            return DOWN, errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return UNKNOWN, f"{type(exc).__name__}: {exc}"
    w.close()
    try:
        await w.wait_closed()
    except OSError:
        pass
    return UP, "accepted"


class TcpProbe:
    """The management-address signal: ``count`` connects started
    ``interval_s`` apart, each waiting up to ``timeout_s`` (they overlap, so
    a host that is gone is known after (count - 1) x interval + timeout,
    not count x timeout); the first answer ends it (up), no answer to any
    is down."""
    name = "probe"

    def __init__(self, port: int, count: int = 3, interval_s: float = 0.2,
                 timeout_s: float = 1.0) -> None:
        self.port, self.count, self.interval_s, self.timeout_s = port, count, interval_s, \
            timeout_s

    async def check(self, address: str) -> tuple[str, str]:
        async def attempt(i: int) -> tuple[str, str]:
            await asyncio.sleep(i * self.interval_s)
            return await tcp_answers(address, self.port, self.timeout_s)

        tasks = [asyncio.ensure_future(attempt(i)) for i in range(self.count)]
        results: list[tuple[str, str]] = []
        try:
            for next_done in asyncio.as_completed(tasks):
                verdict, how = await next_done
                if verdict == UP:
                    return UP, f"{address}:{self.port} {how}"
                results.append((verdict, how))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        last = results[-1][1] if results else "not probed"
        if all(v == DOWN for v, _ in results):
            return DOWN, f"{address}:{self.port} no answer to {self.count} connects ({last})"
        return UNKNOWN, f"{address}:{self.port} {last}"


class NovaComputeService:
    """The Nova signal: the host's nova-compute service as Nova lists it
    (``GET /os-services?binary=nova-compute&host=H``), through the
    openstacksdk glue every OpenStack sink uses."""
    name = "nova"

    def __init__(self, conn: Any) -> None:
        from nfvha.controller.reporters._openstack import SdkSink

        self._sdk = SdkSink(conn, frozenset({400, 403, 404}))

    async def check(self, host: str, since: Optional[datetime] = None) -> tuple[str, str]:
        from nfvha.controller.reporters import Reject, Retry

        try:
            services = await self._sdk._call(lambda c: list(
                c.compute.services(binary="nova-compute", host=host)))
        except (Retry, Reject) as exc:
            return UNKNOWN, f"Nova: {exc.reason}"
        return nova_verdict(host, [
            {"host": getattr(s, "host", None), "state": getattr(s, "state", None),
             "forced_down": getattr(s, "is_forced_down", getattr(s, "forced_down", None)),
             "updated_at": getattr(s, "updated_at", None)}
            for s in services], since)

    async def force_down(self, host: str) -> str:
        """Mark the host's nova-compute forced down (as OPNFV Doctor's
        inspector does): Nova then evacuates from it at once instead of
        after its service_down_time, and schedules nothing onto it."""
        def run(c: Any) -> int:
            n = 0
            for svc in c.compute.services(binary="nova-compute", host=host):
                c.compute.update_service_forced_down(svc, host, "nova-compute", True)
                n += 1
            return n

        n = await self._sdk._call(run)
        return f"Nova: {n} nova-compute service(s) of {host} forced down"

    async def aclose(self) -> None:
        await self._sdk.aclose()


def nova_verdict(host: str, services: list[dict[str, Any]],
                 since: Optional[datetime] = None) -> tuple[str, str]:
    """What Nova's service list says of ``host``'s nova-compute. Nova calls
    a service up until its service_down_time (60 s) passed without a report,
    so "up" proves the host lives only if the report (``updated_at``) came
    after ``since`` (our agent's last word); an older one says nothing."""
    mine = [s for s in services if s.get("host") == host]
    if not mine:
        return UNKNOWN, f"Nova lists no nova-compute on {host}"
    if any(s.get("forced_down") for s in mine):
        return DOWN, "Nova: nova-compute forced down"
    states = {str(s.get("state")).lower() for s in mine}
    if "up" in states:
        if since is None:
            return UP, "Nova: nova-compute up"
        reported = [_utc(s.get("updated_at")) for s in mine if s.get("state") == "up"]
        if any(r is not None and r > since for r in reported):
            return UP, "Nova: nova-compute up, reported since the agent fell silent"
        return UNKNOWN, ("Nova: nova-compute still up, its last report older than the "
                         "agent's silence (Nova marks it down after service_down_time)")
    if states == {"down"}:
        return DOWN, "Nova: nova-compute down"
    return UNKNOWN, f"Nova: nova-compute state {sorted(states)}"


def _utc(value: Any) -> Optional[datetime]:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_utc(value)
    except ValueError:
        return None


# --- the monitor (I/O around the rules) ----------------------------------------------
Emit = Callable[[dict[str, Any], Iterable[str]], Awaitable[Any]]


@dataclasses.dataclass
class Report:
    """One host_down decision carried out (the bench and tests read these)."""
    host: str
    decided_mono: float
    events: list[str]
    stored_mono: float = 0.0
    why: str = ""


class HostFailureMonitor:
    def __init__(self, rules: HostDownRules, *, probe: Optional[TcpProbe] = None,
                 nova: Optional[NovaComputeService] = None,
                 addresses: Optional[dict[str, str]] = None, address_pattern: str = "",
                 use_reported: bool = True,
                 instances_of: Callable[[str], Awaitable[list[dict[str, Any]]]],
                 emit: Emit, report: bool = True, liveness: Any = None,
                 nova_force_down: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self.probe = probe
        self.nova = nova
        self.addresses = dict(addresses or {})
        self.address_pattern = address_pattern
        self.use_reported = use_reported
        self.reported: dict[str, str] = {}
        self.instances_of = instances_of
        self.emit = emit
        self.report = report
        self.liveness = liveness  # hosts.HostLiveness: GET /v1/hosts shows our view
        if nova_force_down and nova is None:
            raise ValueError("nova_force_down needs the Nova connection (nova)")
        self.nova_force_down = nova_force_down
        self.clock = clock
        self.reports: list[Report] = []
        self.listeners: list[Callable[[Report], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._said: dict[str, str] = {}

    # what the controller tells it
    def address_reported(self, host: str, address: Optional[str]) -> None:
        if address:
            self.reported[host] = address
        self.rules.known(host)
        rec = self.liveness.hosts.get(host) if self.liveness is not None else None
        if rec is not None and rec.management_address != self.management_address(host):
            self._show(host)

    def management_address(self, host: str) -> Optional[str]:
        if host in self.addresses:
            return self.addresses[host]
        if self.use_reported and host in self.reported:
            return self.reported[host]
        if self.address_pattern:
            return self.address_pattern.format(host=host)
        return None

    def signals_of(self, host: str) -> list[str]:
        out = []
        if self.probe is not None and self.management_address(host):
            out.append("probe")
        if self.nova is not None:
            out.append("nova")
        return out

    def agent_silent(self, host: str, episode: str) -> None:
        self._act(self.rules.silent(host, episode, self.signals_of(host), self.clock()))
        self._show(host)

    def agent_up(self, host: str) -> None:
        old = self.rules.up(host)
        self._said.pop(host, None)
        if old == HOST_DOWN:
            LOG.warning("compute host %s is back (its agent reports again)", host)
        self._show(host)

    def _show(self, host: str) -> None:
        rec = self.liveness.hosts.get(host) if self.liveness is not None else None
        if rec is None:
            return
        state = self.rules.state(host)
        rec.host_failure = None if state == AGENT_UP else state
        rec.host_failure_reason = self.rules.why(host) or None
        rec.management_address = self.management_address(host)

    def forget(self, host: str) -> None:
        self.rules.forget(host)
        self.reported.pop(host, None)

    def tick(self) -> None:
        if self.liveness is not None:  # retired hosts (DELETE /v1/hosts/{host}) go here too
            for host in [h for h in self.rules.hosts if h not in self.liveness.hosts]:
                self.forget(host)
        self._act(self.rules.due(self.clock(), self.signals_of))

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.nova is not None:
            await self.nova.aclose()

    # doing it
    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _force_down(self, host: str) -> None:
        assert self.nova is not None
        for attempt in range(5):
            if self.rules.state(host) != HOST_DOWN:
                return  # its agent is back: leave Nova's view alone
            try:
                LOG.warning("compute host %s: %s", host, await self.nova.force_down(host))
                return
            except Exception as exc:  # Retry/Reject: Nova notices by itself, later
                LOG.error("compute host %s: forcing nova-compute down failed (%s)", host,
                          getattr(exc, "reason", exc))
                await asyncio.sleep(min(5.0, 0.5 * 2 ** attempt))

    def _act(self, actions: list[Action]) -> None:
        for a in actions:
            self._show(a.host)
            if isinstance(a, Check):
                self._spawn(self._check(a), f"host-check {a.host}")
            elif isinstance(a, Declare):
                self._spawn(self._declare(a, self.clock()), f"host-down {a.host}")
            elif isinstance(a, Held):
                LOG.error("compute host %s: %s", a.host, a.why)
            elif isinstance(a, AgentOnly) and self._said.get(a.host) != a.why:
                self._said[a.host] = a.why  # every recheck says it again: log a change
                LOG.warning("compute host %s: agent silent, host not down (%s)", a.host,
                            a.why)

    async def _check(self, c: Check) -> None:
        async def one(signal: str) -> None:
            try:
                if signal == "probe":
                    assert self.probe is not None
                    address = self.management_address(c.host)
                    verdict, detail = (UNKNOWN, "no management address") if not address \
                        else await self.probe.check(address)
                else:
                    assert self.nova is not None
                    rec = self.liveness.hosts.get(c.host) if self.liveness is not None \
                        else None
                    verdict, detail = await self.nova.check(
                        c.host, rec.last_seen_at if rec is not None else None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a signal that fails tells nothing
                LOG.exception("host check %s of %s failed", signal, c.host)
                verdict, detail = UNKNOWN, f"{type(exc).__name__}: {exc}"
            self._act(self.rules.verdict(c.host, c.round_id, signal, verdict, detail,
                                         self.clock()))

        h = self.rules.hosts.get(c.host)
        await asyncio.gather(*(one(s) for s in (h.signals if h else ())))

    async def _declare(self, d: Declare, decided: float) -> None:
        if not self.report:
            LOG.error("compute host %s is down (%s); [hosts] report_host_down is off: "
                      "its VMs are not reported", d.host, d.why)
            return
        failures = 0
        while True:  # the store may be briefly unreachable: the report must not be lost
            try:
                instances = await self.instances_of(d.host)
                break
            except Exception:
                failures += 1
                LOG.exception("compute host %s is down: its VMs cannot be read (%d)",
                              d.host, failures)
                await asyncio.sleep(min(5.0, 0.2 * 2 ** failures))
        at = iso(utcnow())
        # the id's episode: when the VM's record was last written (shared by
        # every controller, and nothing writes it while its host is dead),
        # so a controller that never heard the agent, or restarted meanwhile,
        # makes the same ids
        events = [{
            "id": host_down_event_id(d.host, i.get("updated_at") or d.episode, i["uuid"]),
            "instance_uuid": i["uuid"], "host": d.host, "kind": HOST_DOWN_KIND,
            "corrective_action": i.get("corrective_action") or "unknown",
            "detail": f"compute host {d.host} down: agent silent; {d.why}",
            "detected_at": at, "detected_mono": decided} for i in instances]
        LOG.error("compute host %s is down (%s): reporting its %d VMs", d.host, d.why,
                  len(events))
        if self.nova_force_down:  # alongside the reports, not before them
            self._spawn(self._force_down(d.host), f"force-down {d.host}")
        report = Report(d.host, decided, [e["id"] for e in events], why=d.why)
        pending, failures = events, 0
        while pending:
            # all at once: each is stored and handed to every sink on its own
            results = await asyncio.gather(*(self.emit(e, ()) for e in pending),
                                           return_exceptions=True)
            failed = [e for e, r in zip(pending, results) if isinstance(r, Exception)]
            if failed:  # stored again with the same id: a no-op where it got through
                failures += 1
                LOG.error("compute host %s: %d host_down events not stored (%s); again",
                          d.host, len(failed), next(r for r in results
                                                    if isinstance(r, Exception)))
                await asyncio.sleep(min(5.0, 0.2 * 2 ** failures))
            pending = failed
        report.stored_mono = self.clock()
        self.reports.append(report)
        del self.reports[:-100]
        for listener in list(self.listeners):
            listener(report)


def build(conf: Any, controller: Any) -> Optional[HostFailureMonitor]:
    """The monitor [hosts] asks for, bound to ``controller``; None when no
    second signal is configured at all (and no agent may report an
    address), or host failure is not tracked."""
    hc = conf.hosts
    if getattr(controller, "hosts", None) is None:
        return None
    probe = TcpProbe(hc.probe_port, hc.probe_count, hc.probe_interval_s,
                     hc.probe_timeout_s) if hc.probe_port > 0 else None
    nova = None
    if hc.nova_cloud:
        from nfvha.controller.reporters._openstack import connect

        def factory(cloud: str = hc.nova_cloud) -> Any:
            return connect(cloud=cloud)

        nova = NovaComputeService(factory)
    if probe is None and nova is None:
        return None
    try:
        hc.management_address_pattern.format(host="cmp-1")
    except (KeyError, IndexError, ValueError) as exc:
        raise SystemExit(f"nfvha: [hosts] management_address_pattern "
                         f"{hc.management_address_pattern!r}: only {{host}} may be "
                         f"used ({exc!r})") from None

    async def instances_of(host: str) -> list[dict[str, Any]]:
        return [i for i in await controller.list_instances() if i["host"] == host]

    if hc.nova_force_down and nova is None:
        raise SystemExit("nfvha: [hosts] nova_force_down needs [hosts] nova_cloud")
    return HostFailureMonitor(
        HostDownRules(hc.recheck_interval_s, hc.max_down_fraction),
        probe=probe, nova=nova, addresses=dict(hc.management_addresses or {}),
        address_pattern=hc.management_address_pattern,
        use_reported=hc.use_reported_address, instances_of=instances_of,
        emit=controller.emit, report=hc.report_host_down, liveness=controller.hosts,
        nova_force_down=hc.nova_force_down)
