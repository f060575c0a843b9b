"""The in-VM heartbeat agent: moves bytes between the virtio-serial port and the
pure guest machine (nfvha.protocol.guest), runs probes and event scripts.

All protocol decisions are in the machine; this file only opens the device,
reads, writes without blocking, keeps one timer and runs subprocesses.
Standard library only, Python 3.8.

OPNFV single-port mode (``single_port=True``, the host must be set the same
way): heartbeat messages travel inside the base layer v2
(``dest_addr`` ``cgcs.heartbeat``) and server-group messages share the port
(``cgcs.server_grp``). The agent owns the port, so it relays the
server-group frames to a pseudo-terminal linked at ``group_device``
(default /run/nfvha/cgcs.messaging): ``GroupClient(group_device)`` and
``nfvha-guest group --device <group_device>`` work there unchanged. The
heartbeat has priority: relayed frames never push a heartbeat answer out of
the bounded write queue, and an application cannot send heartbeat frames.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import tty
from typing import List, Optional, Tuple

from ..protocol import guest as machine
from ..protocol import heartbeat as hb
from ..protocol import sgwire
from ..protocol.framing import FrameError, LineDecoder, encode
from . import probes as probes_mod
from . import sdnotify
from .device import ABSENT_ERRNOS, PortLocator, WriteQueue, open_device

LOG = logging.getLogger("nfvha.guest")

DEFAULT_DEVICE = "/dev/virtio-ports/cgcs.heartbeat"
READ_CHUNK = 4096
READS_PER_WAKEUP = 16  # bound the work per readable event (a flooding host)
STOP_FLUSH_S = 1.0
LOG_EVERY_S = 5.0
DEFAULT_GROUP_DEVICE = "/run/nfvha/cgcs.messaging"
GROUP_QUEUE_MAX = 16  # relayed group frames queued at most (heartbeat keeps the rest)
PORT_POLL_S = 0.5  # how often a missing port (not hot-plugged yet) is looked for

# Checks registered by applications before the Agent is created (register_health_check).
_GLOBAL_CHECKS: List[probes_mod.Probe] = []


def register_health_check(func: probes_mod.HealthCallable, name: Optional[str] = None,
                          period_ms: int = 1000, timeout_ms: int = 1000) -> None:
    """Adds ``func`` (returning bool or (bool, msg)) to the health of every Agent that runs
    in this process. It runs in a worker thread every ``period_ms``."""
    _GLOBAL_CHECKS.append(probes_mod.python_probe(func, name, period_ms, timeout_ms))


class Agent:
    def __init__(
        self,
        device: str = DEFAULT_DEVICE,
        *,
        name: Optional[str] = None,
        interval_ms: int = 200,
        corrective_action: str = "reboot",
        probes: Optional[List[str]] = None,
        event_script: Optional[str] = None,
        invocation_id: Optional[int] = None,
        init_retry_ms: int = 1000,
        reopen_min_s: float = 0.1,
        reopen_max_s: float = 1.0,
        vote_secs: int = 8,
        shutdown_notice_secs: int = 8,
        suspend_notice_secs: int = 8,
        resume_notice_secs: int = 13,
        restart_secs: int = 600,
        single_port: bool = False,
        group_device: str = DEFAULT_GROUP_DEVICE,
        port_poll_s: float = PORT_POLL_S,
        locator: Optional[PortLocator] = None,
    ) -> None:
        if corrective_action not in hb.CORRECTIVE_ACTIONS:
            raise ValueError(f"unknown corrective action {corrective_action!r}")
        self.device = device
        self.config = machine.GuestConfig(
            invocation_id=invocation_id if invocation_id is not None
            else random.SystemRandom().randint(1, 2**31 - 1),
            name=name or socket.gethostname(), interval_ms=interval_ms,
            corrective_action=corrective_action, vote_secs=vote_secs,
            shutdown_notice_secs=shutdown_notice_secs, suspend_notice_secs=suspend_notice_secs,
            resume_notice_secs=resume_notice_secs, restart_secs=restart_secs,
            init_retry_ms=init_retry_ms,
        )
        self._state = machine.initial(self.config)
        self.probes = [probes_mod.parse_probe(p) for p in (probes or [])]
        self.event_script = event_script
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = reopen_max_s
        self.port_poll_s = port_poll_s
        self.locator = locator or PortLocator(device)
        self.single_port = single_port
        self.group_device = group_device
        self._relay: Optional[_GroupRelay] = None
        self.registered = False
        self.registrations = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._fd: Optional[int] = None
        self._max_msg = sgwire.MAX_MSG if single_port else hb.MAX_MSG
        self._decoder = LineDecoder(self._max_msg)
        self._queue = WriteQueue()
        self._timer: Optional[asyncio.TimerHandle] = None
        self._session_end: Optional[asyncio.Future] = None
        self._stopping = False
        self._tasks: List[asyncio.Task] = []
        self._writer_armed = False
        self.frame_errors = 0
        self._batching = False
        self._last_frame_log = float("-inf")
        self._session_errno: Optional[int] = None  # the error that ended the last session

    # ---- public API -----------------------------------------------------------------------

    def register_health_check(self, func: probes_mod.HealthCallable, name: Optional[str] = None,
                              period_ms: int = 1000, timeout_ms: int = 1000) -> None:
        self.probes.append(probes_mod.python_probe(func, name, period_ms, timeout_ms))

    def health(self) -> machine.Health:
        ok, msg = probes_mod.summarize(self.probes)
        return machine.Health(healthy=ok, log_msg=msg)

    def stop(self) -> None:
        """Sends exit, flushes (at most 1 s) and makes ``run`` return. Loop thread only."""
        if self._stopping:
            return
        self._stopping = True
        self._feed(machine.Stop())
        if self._fd is None:
            self._end_session("stopped")
            return
        assert self._loop is not None
        self._loop.create_task(self._drain_then_end())

    def run_forever(self) -> int:
        """Runs until SIGTERM/SIGINT; returns the process exit code."""
        return asyncio.run(self.run(install_signals=True))

    async def run(self, install_signals: bool = False) -> int:
        self._loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.stop)
        self.probes.extend(p for p in _GLOBAL_CHECKS if p not in self.probes)
        for probe in self.probes:
            self._tasks.append(self._loop.create_task(
                probes_mod.run_forever(probe, self._on_probe_change)))
        LOG.info("nfvha-guest starting: device=%s name=%s interval=%d ms action=%s probes=%d",
                 self.device, self.config.name, self.config.interval_ms,
                 self.config.corrective_action, len(self.probes))
        backoff = self.reopen_min_s
        last_error = None
        if self.single_port:
            self._relay = _GroupRelay(self, self.group_device)
        # under systemd (etc/systemd/nfvha-guest.service): the watchdog pings
        # come from this loop, so a hung agent is restarted, not just missed
        sd = sdnotify.Notifier()
        sd.ready(f"device {self.device}")
        self._tasks.append(self._loop.create_task(sd.watchdog()))
        waiting = False  # for a port that is not there: one log line, not one per poll
        quiet = False  # a loss already logged and no registration since
        try:
            while not self._stopping:
                path = self.locator.locate()
                fd = None
                if path is not None:
                    try:
                        fd = open_device(path)
                    except OSError as exc:
                        if exc.errno not in ABSENT_ERRNOS:
                            if str(exc) != last_error:
                                LOG.warning("cannot open %s: %s (retrying)", path, exc)
                                last_error = str(exc)
                            await self._sleep(backoff)
                            backoff = min(backoff * 2, self.reopen_max_s)
                            continue
                if fd is None:  # not there (yet, or any more): poll until it is
                    if not waiting:
                        LOG.warning("no port %s: waiting for it to appear (checked every "
                                    "%.1f s)", self.device, self.port_poll_s)
                        waiting = True
                    # Soon at first (a port racing the agent at boot), then every port_poll_s.
                    await self._sleep(min(backoff, self.port_poll_s))
                    backoff = min(backoff * 2, self.reopen_max_s)
                    continue
                if waiting:
                    LOG.info("port %s is there (%s)", self.device, path)
                    waiting = False
                last_error = None
                self._fd = fd
                registrations = self.registrations
                self._session_errno = None
                reason = await self._session()
                if self.registrations:
                    backoff = self.reopen_min_s  # it worked once: come back quickly
                if self.registrations > registrations:
                    quiet = False
                if self._stopping:
                    break
                # Hot-unplugged: the read fails with ENODEV, and the node and its sysfs
                # entry go a moment later. Either way: wait for the port to return.
                if self._session_errno in ABSENT_ERRNOS or not self._port_present():
                    LOG.warning("channel lost (%s): port %s is gone; waiting for it to "
                                "come back", reason, self.device)
                    waiting = True
                    continue
                # Without a host connected a virtio-serial read is EOF at once: log the
                # first loss, not every reopen until a host is there again.
                (LOG.debug if quiet else LOG.warning)(
                    "channel lost (%s); reopening in %.1f s", reason, backoff)
                quiet = True
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.reopen_max_s)
        finally:
            self._cancel_timer()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            if self._relay is not None:
                self._relay.close()
                self._relay = None
            sd.stopping()
            sd.close()
        LOG.info("nfvha-guest stopped")
        return 0

    def _port_present(self) -> bool:
        path = self.locator.locate()
        return path is not None and os.path.exists(path)

    # ---- channel session ------------------------------------------------------------------

    async def _session(self) -> str:
        assert self._loop is not None and self._fd is not None
        self._decoder = LineDecoder(self._max_msg)
        self._queue.clear()
        self._session_end = self._loop.create_future()
        self._loop.add_reader(self._fd, self._on_readable)
        self._feed(machine.Start())
        try:
            reason = await self._session_end
        finally:
            self._close()
        if not self._stopping:
            self._feed(machine.HostGone())
        self.registered = False
        return reason

    def _close(self) -> None:
        if self._fd is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._fd)
        if self._writer_armed:
            self._loop.remove_writer(self._fd)
            self._writer_armed = False
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = None

    def _end_session(self, reason: str) -> None:
        if self._session_end is not None and not self._session_end.done():
            self._session_end.set_result(reason)

    async def _drain_then_end(self) -> None:
        assert self._loop is not None
        deadline = self._loop.time() + STOP_FLUSH_S
        while len(self._queue) and self._fd is not None and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._end_session("stopped")

    async def _sleep(self, seconds: float) -> None:
        # Interruptible by stop(): wait on a future that stop() completes.
        assert self._loop is not None
        self._session_end = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._session_end), seconds)
        except asyncio.TimeoutError:
            pass

    def _on_readable(self) -> None:
        # Everything read in one wakeup is answered before one flush: after a stall
        # (SIGSTOP, a loaded VM) the host's piled-up challenges are all answered in the
        # queue, and the queue keeps only the newest answer, the only one still valid.
        self._batching = True
        try:
            self._read_batch()
        finally:
            self._batching = False
        self._flush()

    def _read_batch(self) -> None:
        assert self._fd is not None
        for _ in range(READS_PER_WAKEUP):
            try:
                data = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:  # EIO: the pty/virtio host side hung up
                self._session_errno = exc.errno
                self._end_session(f"read error: {exc.strerror or exc}")
                return
            if not data:
                self._end_session("EOF")
                return
            for item in self._decoder.feed(data):
                if isinstance(item, FrameError):
                    self._log_frame_error(item)
                elif self.single_port:
                    self._split(item)
                else:
                    self._feed(machine.Received(item, self.health()))
                if self._fd is None:
                    return

    def _split(self, item: dict) -> None:
        # single-port: base layer in front of the heartbeat machine
        dest = item.get("dest_addr", sgwire.ADDR_SERVER_GROUP)
        if dest == sgwire.ADDR_HEARTBEAT:
            data = item.get("data")
            if isinstance(data, dict):
                self._feed(machine.Received(data, self.health()))
            else:
                self._log_frame_error(FrameError("heartbeat envelope without data", b""))
        elif dest == sgwire.ADDR_SERVER_GROUP and self._relay is not None:
            self._relay.to_group(item)
        else:
            self._log_frame_error(FrameError("unknown dest_addr", str(dest)[:64].encode()))

    def send_group_frame(self, item: dict) -> bool:
        """single-port: a server-group frame from the group device to the host."""
        if self._fd is None or len(self._queue) >= GROUP_QUEUE_MAX:
            return False
        self._queue.put("group", encode(item))
        self._flush()
        return True

    def _log_frame_error(self, error: FrameError) -> None:
        # At most one line per LOG_EVERY_S: garbage from the host must not flood the log.
        assert self._loop is not None
        self.frame_errors += 1
        now = self._loop.time()
        if now - self._last_frame_log >= LOG_EVERY_S:
            LOG.warning("dropped a malformed frame (%s): %r (%d so far)", error.reason,
                        error.sample, self.frame_errors)
            self._last_frame_log = now

    def _on_writable(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._fd is None:
            return
        assert self._loop is not None
        try:
            done = self._queue.flush(self._fd)
        except OSError as exc:
            self._session_errno = exc.errno
            self._end_session(f"write error: {exc.strerror or exc}")
            return
        if done and self._writer_armed:
            self._loop.remove_writer(self._fd)
            self._writer_armed = False
        elif not done and not self._writer_armed:
            self._loop.add_writer(self._fd, self._on_writable)
            self._writer_armed = True

    # ---- the machine ----------------------------------------------------------------------

    def _feed(self, event: object) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._state, outputs, deadline = machine.step(self._state, event, now)  # type: ignore
        for out in outputs:
            self._handle(out)
        self._cancel_timer()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._feed(machine.Tick())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handle(self, out: object) -> None:
        if isinstance(out, machine.Send):
            if self._fd is not None:
                msg = out.msg
                if self.single_port:
                    msg = sgwire.wrap(msg, dest_addr=sgwire.ADDR_HEARTBEAT,
                                      source_addr=sgwire.ADDR_HEARTBEAT)
                self._queue.put(out.msg["msg_type"], encode(msg))
                if not self._batching:
                    self._flush()
        elif isinstance(out, machine.RunEventScript):
            assert self._loop is not None
            self._tasks.append(self._loop.create_task(self._run_event_script(out)))
        elif isinstance(out, machine.Registered):
            self.registered = True
            self.registrations += 1
            LOG.info("registered with the host (invocation %d)", self.config.invocation_id)
        elif isinstance(out, machine.HostLost):
            self.registered = False
            LOG.warning("host lost; registering again")
        elif isinstance(out, machine.Ignored):
            LOG.debug("ignored: %s", out.reason)

    def _on_probe_change(self, probe: probes_mod.Probe) -> None:
        ok, msg = probe.result
        if ok:
            LOG.info("probe %s passes", probe.name)
        else:
            LOG.warning("probe %s fails: %s", probe.name, msg)

    async def _run_event_script(self, req: machine.RunEventScript) -> None:
        self._tasks = [t for t in self._tasks if not t.done()]
        result, log_msg = await run_event_script(self.event_script, req)
        if result is not None and not self._stopping:
            self._feed(machine.VoteResult(req.invocation_id, result, log_msg))


async def run_event_script(script: Optional[str],
                           req: machine.RunEventScript) -> Tuple[Optional[str], str]:
    """``script <revocable|irrevocable> <event_type>``: exit 0 = accept. Returns
    (None, "") on timeout so the machine answers "timeout" itself."""
    if not script:
        return "unknown", "no event script"  # what the StarlingX client answers
    try:
        proc = await asyncio.create_subprocess_exec(
            script, req.notification_type, req.event_type, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return "error", f"event script: {exc.strerror or exc}"
    try:
        _, err = await asyncio.wait_for(proc.communicate(), req.timeout_ms / 1000.0)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return None, ""
    text = err.decode("utf-8", "replace").strip()[:200] if err else ""
    if req.notification_type == "irrevocable":
        return "complete", text
    return ("accept" if proc.returncode == 0 else "reject"), text



class _GroupRelay:
    """single-port: server-group frames between the shared port and a pty that
    stands in for the ``cgcs.messaging`` port (linked at ``link``)."""

    def __init__(self, agent: Agent, link: str) -> None:
        self.agent = agent
        self.link = link
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # a virtio port has no line discipline
        os.set_blocking(self.master, False)
        self.decoder = LineDecoder(sgwire.MAX_MSG)
        self.dropped = 0
        parent = os.path.dirname(link)
        if parent:
            os.makedirs(parent, exist_ok=True)
        try:
            os.unlink(link)
        except FileNotFoundError:
            pass
        os.symlink(os.ttyname(self.slave), link)
        assert agent._loop is not None
        self._loop = agent._loop
        self._loop.add_reader(self.master, self._from_app)

    def _from_app(self) -> None:
        try:
            data = os.read(self.master, READ_CHUNK)
        except (BlockingIOError, OSError):
            return
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                self.dropped += 1
            elif item.get("dest_addr", sgwire.ADDR_SERVER_GROUP) != sgwire.ADDR_SERVER_GROUP:
                self.dropped += 1  # an application may not speak for the heartbeat
            elif not self.agent.send_group_frame(item):
                self.dropped += 1

    def to_group(self, item: dict) -> None:
        try:
            os.write(self.master, encode(item))
        except (BlockingIOError, OSError):
            self.dropped += 1  # the application does not read: drop, never wait

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            if os.path.islink(self.link):
                os.unlink(self.link)
        except OSError:
            pass
