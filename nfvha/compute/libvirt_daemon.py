"""A libvirtd for tests, the demo and benchmarks on a host without an init
system that runs one (this sandbox: no systemd as PID 1).

    d = LibvirtDaemon().start()      # or reuses a libvirtd already answering
    conn = libvirt.open(d.uri)
    ...
    d.stop()                         # destroys the domains started meanwhile, then the daemon

`virtlogd` and `libvirtd` run in the foreground as children of a small
supervisor process (`python -m nfvha.compute.libvirt_daemon supervise DIR`)
that is a child subreaper (PR_SET_CHILD_SUBREAPER) and reaps at once: the
QEMUs libvirt daemonizes are reparented to it, not to PID 1. PID 1 here
reaps orphans only every ~2 s, and libvirtd reports a killed or destroyed
domain only once its QEMU is reaped: under a daemonized libvirtd
(`libvirtd -d`) such lifecycle events arrive ~2 s late. The supervisor has
its own session (a Ctrl-C of the demo does not reach libvirtd before the
demo has destroyed its domains) and stops everything when its caller dies.

`qemu:///system` has one socket (/run/libvirt/libvirt-sock): there is one
libvirtd per host, ours or someone else's. A libvirtd that already answers
is reused as it is (`reused`, and `describe()` says so); it is then never
stopped or restarted by us.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nfvha.subreaper import Subreaper

LOG = logging.getLogger(__name__)

URI = "qemu:///system"
LIBVIRTD = "/usr/sbin/libvirtd"
VIRTLOGD = "/usr/sbin/virtlogd"
VIRTLOGD_SOCK = "/run/libvirt/virtlogd-sock"
# the supervisor: SIGUSR1 = restart libvirtd alone (its QEMUs keep running)
RESTART_SIGNAL = signal.SIGUSR1


class LibvirtdError(RuntimeError):
    pass


def quiet_libvirt_errors() -> None:
    """libvirt prints every error to stderr by default, besides raising it;
    we log what we catch, so the print is noise (e.g. each failed connect
    while libvirtd restarts). Process-wide, idempotent."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def answers(uri: str = URI) -> bool:
    """Whether a libvirtd answers at `uri` right now."""
    import libvirt

    quiet_libvirt_errors()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        conn.getLibVersion()
        return True
    except libvirt.libvirtError:
        return False
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def unavailable_reason() -> str | None:
    """Why this process cannot run a libvirtd here (None: it can)."""
    if not os.path.exists(LIBVIRTD) or not os.path.exists(VIRTLOGD):
        return ("libvirtd/virtlogd are not installed (scripts/install-system-deps.sh "
                "installs libvirt-daemon-system as root)")
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed (pip install -e .)"
    if os.geteuid() != 0 and not answers():
        return "starting libvirtd for qemu:///system needs root"
    return None


class LibvirtDaemon:
    """One libvirtd at qemu:///system, started under our supervisor or reused."""

    def __init__(self, workdir: Path | None = None, *, start_timeout_s: float = 30.0) -> None:
        self.uri = URI
        self.workdir = Path(workdir) if workdir else None
        self.start_timeout_s = start_timeout_s
        self.reused = False
        self.pid: int | None = None            # libvirtd's (ours or the reused one's)
        self._sup: subprocess.Popen[bytes] | None = None
        self._domains_at_start: set[str] = set()

    # -- start / stop ------------------------------------------------------------------
    def start(self) -> LibvirtDaemon:
        reason = unavailable_reason()
        if reason:
            raise LibvirtdError(reason)
        quiet_libvirt_errors()
        if answers(self.uri):
            self._reuse()
            return self
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="nfvha-libvirtd-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "supervisor.log", "ab")
        try:
            self._sup = subprocess.Popen(
                [sys.executable, "-m", "nfvha.compute.libvirt_daemon", "supervise",
                 str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": _package_root()})
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._sup.poll() is not None:
                # another libvirtd won the race for the pid file: use that one
                self._sup = None
                if answers(self.uri):
                    self._reuse()
                    return self
                raise LibvirtdError(f"libvirtd did not start; see {self.workdir}/*.log:\n"
                                    f"{self.logs_tail()}")
            if answers(self.uri):
                self.pid = _read_pid(self.workdir / "libvirtd.child")
                self._domains_at_start = self._running_domains()
                LOG.info("started libvirtd (pid %s) under supervisor %s; logs in %s",
                         self.pid, self._sup.pid, self.workdir)
                return self
            time.sleep(0.05)
        self.stop()
        raise LibvirtdError(f"libvirtd did not answer within {self.start_timeout_s} s:\n"
                            f"{self.logs_tail()}")

    def _reuse(self) -> None:
        self.reused = True
        self.pid = _pid_of("libvirtd")
        LOG.info("%s", self.describe())

    def describe(self) -> str:
        if not self.reused:
            return (f"libvirtd pid {self.pid} started by nfvha under a child-subreaper "
                    f"supervisor (logs in {self.workdir})")
        msg = f"reusing the libvirtd already running at {self.uri} (pid {self.pid})"
        if self.pid and _ppid(self.pid) == 1 and os.getpid() != 1:
            msg += ("; it is daemonized (its QEMUs are reaped by PID 1, which may be slow: "
                    "events of killed or destroyed domains may come late)")
        return msg

    def stop(self, timeout_s: float = 30.0) -> None:
        """Destroys the domains that were started while the daemon was ours,
        then stops libvirtd and virtlogd. A reused libvirtd is left alone."""
        if self._sup is None:
            return
        try:
            self._destroy_new_domains()
        except Exception as exc:  # the daemon may already be gone
            LOG.warning("could not destroy the domains of our libvirtd: %s", exc)
        if self._sup.poll() is None:
            self._sup.send_signal(signal.SIGTERM)
            try:
                self._sup.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._sup.kill()
                self._sup.wait(5)
        self._sup = None
        LOG.info("stopped our libvirtd")

    def restart_libvirtd(self, timeout_s: float = 30.0) -> None:
        """Stops and starts libvirtd alone (SIGTERM, then a new one): its
        QEMUs keep running and the new libvirtd reconnects to them. Only for
        a libvirtd of ours."""
        if self._sup is None or self._sup.poll() is not None:
            raise LibvirtdError("this libvirtd is not ours to restart")
        old = self.pid
        self._sup.send_signal(RESTART_SIGNAL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid = _read_pid(self.workdir / "libvirtd.child") if self.workdir else None
            if pid and pid != old and answers(self.uri):
                self.pid = pid
                return
            time.sleep(0.05)
        raise LibvirtdError(f"libvirtd did not come back within {timeout_s} s:\n"
                            f"{self.logs_tail()}")

    def logs_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("supervisor.log", "libvirtd.log", "virtlogd.log"):
            p = (self.workdir / name) if self.workdir else None
            if p is not None and p.exists():
                tail = p.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(out)

    def __enter__(self) -> LibvirtDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- domains -----------------------------------------------------------------------
    def _running_domains(self) -> set[str]:
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            return {d.UUIDString() for d in conn.listAllDomains(
                libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
        finally:
            conn.close()

    def _destroy_new_domains(self) -> None:
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                if dom.UUIDString() in self._domains_at_start:
                    continue
                try:
                    dom.destroy()
                except libvirt.libvirtError as exc:
                    LOG.warning("could not destroy domain %s: %s", dom.name(), exc)
        finally:
            conn.close()


# ---------------------------------------------------------------------- supervisor
def supervise(workdir: Path) -> int:
    """Runs virtlogd and libvirtd in the foreground as our children and
    reaps every orphan (the domains' QEMUs) the moment SIGCHLD arrives.
    SIGTERM/SIGINT: stop; SIGUSR1: restart libvirtd alone. Ends on its own
    when libvirtd exits unasked or when our caller dies."""
    sr = Subreaper(("virtlogd", "libvirtd"), extra=(RESTART_SIGNAL,))
    say, procs = sr.say, sr.procs

    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    # LIBVIRT_LOG_FILTERS/LIBVIRT_LOG_OUTPUTS, LIBVIRT_DEBUG: libvirtd's logging, for debugging
    env.update({k: v for k, v in os.environ.items() if k.startswith("LIBVIRT_")})

    def spawn(argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(workdir / log, "ab") as f:
            return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=subprocess.STDOUT, preexec_fn=sr.unblock)

    def start_libvirtd() -> None:
        p = spawn([LIBVIRTD], "libvirtd.log")
        procs["libvirtd"] = p
        (workdir / "libvirtd.child").write_text(f"{p.pid}\n")
        say(f"libvirtd pid {p.pid}")

    virtlogd = procs["virtlogd"] = spawn([VIRTLOGD], "virtlogd.log")
    say(f"virtlogd pid {virtlogd.pid}")
    # libvirtd asks virtlogd for each QEMU's log as the domain starts: have it listen first
    end = time.monotonic() + 10
    while not os.path.exists(VIRTLOGD_SOCK) and time.monotonic() < end:
        sr.wait(0.02)
    start_libvirtd()
    while True:
        info = sr.wait(1.0)
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
            break
        lv = procs["libvirtd"]
        if info is not None and info.si_signo == RESTART_SIGNAL:
            say("restarting libvirtd")
            sr.stopping = True
            if lv is not None and lv.returncode is None:
                lv.send_signal(signal.SIGTERM)
                sr.wait_gone(lv, 30)
                if lv.returncode is None:
                    lv.kill()
                    sr.wait_gone(lv, 5)
            sr.stopping = False
            start_libvirtd()
            continue
        if lv is not None and lv.returncode is not None:
            say("libvirtd is gone; stopping")
            break
        if sr.caller_died():
            say("our caller died; stopping")
            break
    sr.stopping = True
    for label in ("libvirtd", "virtlogd"):
        p = procs[label]
        if p is not None and p.returncode is None:
            p.send_signal(signal.SIGTERM)
            sr.wait_gone(p, 20)
            if p.returncode is None:
                say(f"{label} ignored SIGTERM; killing it")
                p.kill()
                sr.wait_gone(p, 5)
    # whatever is left below us (QEMUs nobody destroyed) goes too: a QEMU
    # left to PID 1 with no libvirtd would hold its sockets and memory
    sr.kill_leftovers(describe=_comm)
    say("stopped")
    return 0


# ---------------------------------------------------------------------- /proc helpers
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[0], int(fields[1])


def _ppid(pid: int) -> int | None:
    st = _stat(pid)
    return st[1] if st else None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _pid_of(comm: str) -> int | None:
    for d in os.listdir("/proc"):
        if d.isdigit() and _comm(int(d)) == comm:
            return int(d)
    return None


def _read_pid(path: Path) -> int | None:
    try:
        txt = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(txt) if txt.isdigit() else None


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "supervise":
        return supervise(Path(args[1]))
    print("usage: python -m nfvha.compute.libvirt_daemon supervise WORKDIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
