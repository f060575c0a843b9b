"""Health probes of the guest agent: exec, tcp, http, file, and Python callables.

Each probe runs on its own period in the background; the agent answers
challenges from the cached results and never waits for a probe. A probe that
has not finished its first run counts as passing, so a slow first check
cannot raise a false alarm at boot. Standard library only, Python 3.8.
"""
from __future__ import annotations

import asyncio
import http.client
import os
import re
import shlex
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, Union

CheckResult = Tuple[bool, str]
HealthCallable = Callable[[], Union[bool, Tuple[bool, str]]]

# kind -> (period_ms, timeout_ms) defaults
DEFAULTS: Dict[str, Tuple[int, int]] = {
    "file": (100, 100),
    "tcp": (1000, 1000),
    "http": (1000, 1000),
    "exec": (10000, 5000),
    "python": (1000, 1000),
}
_OPTION = re.compile(r"^(timeout_ms|period_ms)=(\d+)$")


class ProbeSpecError(ValueError):
    pass


@dataclass
class Probe:
    kind: str  # "exec" | "tcp" | "http" | "file" | "python"
    target: str  # command line, host:port, URL, path, or a callable's name
    period_ms: int
    timeout_ms: int
    func: Optional[HealthCallable] = None
    result: CheckResult = (True, "")
    runs: int = 0
    # A thread still running a previous check (a hung callable): never start a second.
    pending: Optional[asyncio.Future] = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}"


def parse_probe(spec: str) -> Probe:
    """``KIND:TARGET[,timeout_ms=N][,period_ms=N]`` (options are peeled off the right,
    so a command may itself contain commas)."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("exec", "tcp", "http", "file"):
        raise ProbeSpecError(f"probe {spec!r}: expected exec:, tcp:, http: or file:")
    parts = rest.split(",")
    options: Dict[str, int] = {}
    while len(parts) > 1 and _OPTION.match(parts[-1].strip()):
        key, value = parts.pop().strip().split("=")
        options[key] = int(value)
    target = ",".join(parts)
    period, timeout = DEFAULTS[kind]
    period = options.get("period_ms", period)
    timeout = options.get("timeout_ms", timeout)
    if not target:
        raise ProbeSpecError(f"probe {spec!r}: nothing to check")
    if period <= 0 or timeout <= 0:
        raise ProbeSpecError(f"probe {spec!r}: period_ms and timeout_ms must be positive")
    if kind == "tcp":
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ProbeSpecError(f"probe {spec!r}: expected tcp:HOST:PORT")
    if kind == "http":
        if not target.startswith(("http://", "https://")):
            target = "http://" + target
        if not urllib.parse.urlsplit(target).hostname:
            raise ProbeSpecError(f"probe {spec!r}: expected http:URL")
    if kind == "exec":
        try:
            argv = shlex.split(target)
        except ValueError as exc:  # unbalanced quotes
            raise ProbeSpecError(f"probe {spec!r}: {exc}") from None
        if not argv:
            raise ProbeSpecError(f"probe {spec!r}: empty command")
    return Probe(kind, target, period, timeout)


def python_probe(func: HealthCallable, name: Optional[str] = None, period_ms: int = 1000,
                 timeout_ms: int = 1000) -> Probe:
    label = name or getattr(func, "__name__", "check")
    return Probe("python", label, period_ms, timeout_ms, func=func)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _check_exec(probe: Probe) -> CheckResult:
    proc = await asyncio.create_subprocess_exec(
        *shlex.split(probe.target), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), probe.timeout_ms / 1000.0)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"{probe.name} timed out after {probe.timeout_ms} ms"
    if proc.returncode == 0:
        return True, ""
    detail = _short(err.decode("utf-8", "replace")) if err else ""
    return False, f"{probe.name} exited {proc.returncode} {detail}".rstrip()


async def _check_tcp(probe: Probe) -> CheckResult:
    host, _, port = probe.target.rpartition(":")
    host = host.strip("[]")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                           probe.timeout_ms / 1000.0)
    except asyncio.TimeoutError:
        return False, f"{probe.name} timed out"
    except OSError as exc:
        return False, f"{probe.name} {exc.strerror or exc}"
    writer.close()
    return True, ""


def _http_status(url: str, timeout_s: float) -> int:
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout_s)  # type: ignore[arg-type]
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("GET", path, headers={"User-Agent": "nfvha-guest"})
        return conn.getresponse().status  # redirects are not followed: 3xx counts as up
    finally:
        conn.close()


class StillRunning(Exception):
    pass


async def _in_thread(probe: Probe, func: Callable[[], Any]) -> Any:
    if probe.pending is not None and not probe.pending.done():
        raise StillRunning()
    loop = asyncio.get_running_loop()
    probe.pending = loop.run_in_executor(None, func)
    # shield: a timeout abandons the wait, not the thread (threads cannot be cancelled).
    return await asyncio.wait_for(asyncio.shield(probe.pending), probe.timeout_ms / 1000.0)


async def _check_http(probe: Probe) -> CheckResult:
    try:
        status = await _in_thread(probe, lambda: _http_status(probe.target,
                                                              probe.timeout_ms / 1000.0))
    except asyncio.TimeoutError:
        return False, f"{probe.name} timed out"
    except StillRunning:
        return False, f"{probe.name} still running"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{probe.name} {_short(str(exc))}"
    if 200 <= status < 400:
        return True, ""
    return False, f"{probe.name} answered {status}"


async def _check_file(probe: Probe) -> CheckResult:
    if os.path.exists(probe.target):
        return True, ""
    return False, f"{probe.target} is missing"


async def _check_python(probe: Probe) -> CheckResult:
    assert probe.func is not None
    try:
        value = await _in_thread(probe, probe.func)
    except asyncio.TimeoutError:
        return False, f"{probe.target} timed out"
    except StillRunning:
        return False, f"{probe.target} still running"
    except Exception as exc:  # an application's check: any failure means unhealthy
        return False, f"{probe.target} raised {type(exc).__name__}: {_short(str(exc))}"
    if isinstance(value, tuple) and len(value) == 2:
        return bool(value[0]), str(value[1]) if not value[0] else ""
    return (True, "") if value else (False, f"{probe.target} failed")


_CHECKS: Dict[str, Callable[[Probe], Awaitable[CheckResult]]] = {
    "exec": _check_exec,
    "tcp": _check_tcp,
    "http": _check_http,
    "file": _check_file,
    "python": _check_python,
}


async def check_once(probe: Probe) -> CheckResult:
    """Runs one check; never raises (except cancellation)."""
    try:
        return await _CHECKS[probe.kind](probe)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a broken probe must not take the agent down
        return False, f"{probe.name} error {type(exc).__name__}: {_short(str(exc))}"


async def run_forever(probe: Probe, on_change: Optional[Callable[[Probe], None]] = None) -> None:
    """Re-runs ``probe`` on its period, caching its result in ``probe.result``."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        result = await check_once(probe)
        changed = result[0] != probe.result[0] or probe.runs == 0
        probe.result = result
        probe.runs += 1
        if changed and on_change is not None:
            on_change(probe)
        # Period counts from the start of a run, so a slow probe does not drift.
        await asyncio.sleep(max(0.0, started + probe.period_ms / 1000.0 - loop.time()))


def summarize(probes: List[Probe]) -> CheckResult:
    """All probes pass -> (True, ""); else (False, the failures joined)."""
    failures = [p.result[1] or p.name for p in probes if not p.result[0]]
    return (not failures, "; ".join(failures))
