"""A private single-node Pacemaker + Corosync cluster (synchronous API).

Isolation (several clusters may run side by side, the system's own
/etc/corosync and /var/lib/pacemaker are never touched):

* Each cluster lives in its own network namespace `nfvha-<rid>-pcmk`:
  corosync's knet port on 127.0.0.1 and the abstract UNIX sockets of
  libqb IPC (cib_rw, crmd, cpg, ...) are per network namespace, so two
  clusters never see each other. The client tools (cibadmin, crm_mon,
  crm_resource) are run through `ip netns exec` for the same reason.
* `ip netns exec` also gives the supervisor a private (slave) mount
  namespace; there it bind-mounts `<workdir>/var-lib-pacemaker` over
  /var/lib/pacemaker (the CIB dir is compiled in, no env var moves it) and
  `<workdir>/run-crm` over /run/crm. Corosync reads
  COROSYNC_MAIN_CONFIG_FILE and keeps its state in `system.run_dir`.
* Managed processes run in the caller's network namespace by default
  (wrapped with `nsenter --net=<the caller's netns>`), so a resource that
  listens on 127.0.0.1 is reachable from the test and from HAProxy.

Zombies: PID 1 of this VM reaps orphans only every ~1.5 s and
ocf:heartbeat:anything's `kill -0` sees a zombie as alive. The supervisor
(`python -m nfvha.verify.deploy.pacemaker supervise <workdir>`) sets
PR_SET_CHILD_SUBREAPER, starts `corosync -f` and `pacemakerd` as its own
children and reaps every orphan the moment SIGCHLD arrives.

Failure/recovery timestamps come from a Pacemaker *alert agent*: the
controller stamps each alert when it processes an operation result
(CRM_alert_timestamp_epoch/usec, microseconds); the agent appends one line
per operation to `<workdir>/var-lib-pacemaker/nfvha-alerts/alerts.log`.
"detected" = the failed recurring monitor's alert; "running again" = the
next successful start. Accuracy: the detection instant itself is bounded by
the monitor interval (the monitor runs every `monitor_ms`); the alert stamp
is taken when the result reaches the controller (~1–5 ms after the
monitor's exit). The alert is also the cluster's "alarm information"
(Req 5.4.4/5.4.9/5.4.12).
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from nfvha.subreaper import Subreaper, proc_stats
from nfvha.verify.deploy import netns
from nfvha.verify.deploy.procfs import is_zombie, read_pid

CLONE_NEWNS = 0x00020000

ALERT_SCRIPT = """#!/bin/sh
# nfvha: one line per Pacemaker alert (runs as hacluster, see pacemaker.py)
printf '%s %s %s %s %s %s %s %s %s\\n' \\
  "$CRM_alert_timestamp_epoch" "$CRM_alert_timestamp_usec" "$CRM_alert_kind" \\
  "${CRM_alert_rsc:--}" "${CRM_alert_task:--}" "${CRM_alert_rc:--}" \\
  "${CRM_alert_interval:--}" "${CRM_alert_target_rc:--}" "${CRM_alert_status:--}" \\
  >> "$CRM_alert_recipient"
"""

COROSYNC_CONF = """totem {{
    version: 2
    cluster_name: {cluster}
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: {token_ms}
}}
nodelist {{
{nodes}}}
quorum {{
    provider: corosync_votequorum
{votes}}}
system {{
    run_dir: {run_dir}
}}
logging {{
    to_stderr: no
    to_syslog: no
    to_logfile: yes
    logfile: {logfile}
    timestamp: hires
}}
"""


def corosync_conf(cluster: str, members: Sequence[tuple[str, str]], run_dir: Path,
                  logfile: Path, token_ms: int = 3000, expected_votes: int | None = None) -> str:
    """corosync.conf for `members` [(node name, ring0 address)], node ids 1, 2, ...
    in that order (knet, no crypto, votequorum, hires timestamps in `logfile`)."""
    nodes = "".join(f"    node {{\n        name: {n}\n        nodeid: {k}\n"
                    f"        ring0_addr: {a}\n    }}\n"
                    for k, (n, a) in enumerate(members, 1))
    votes = "" if expected_votes is None else f"    expected_votes: {expected_votes}\n"
    return COROSYNC_CONF.format(cluster=cluster, nodes=nodes, votes=votes, token_ms=token_ms,
                                run_dir=run_dir, logfile=logfile)


class ClusterError(RuntimeError):
    pass


@dataclasses.dataclass
class OpEvent:
    """One operation result as Pacemaker's alert reported it."""

    wall: float          # time.time() scale, from CRM_alert_timestamp_epoch/usec
    mono: float          # the same instant on time.monotonic()'s scale
    kind: str            # "resource" | "node" | "fencing" | "attribute"
    rsc: str
    task: str            # "monitor" | "start" | "stop" | ...
    rc: int | None
    interval_ms: int | None
    target_rc: int | None
    status: str

    @property
    def failed(self) -> bool:
        return self.rc is not None and self.target_rc is not None and self.rc != self.target_rc


def _mono_offset() -> float:
    """time.time() - time.monotonic(), to move alert stamps onto the monotonic scale."""
    return time.time() - time.monotonic()


def _int(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


class PacemakerCluster:
    """A single-node Pacemaker cluster in its own namespaces; see module doc.

    Usage::

        c = PacemakerCluster(tmp / "pcmk").start()          # ~15-25 s
        c.add_process_resource("web1", ["/usr/bin/python3", "-m", "http.server", "8081"])
        c.wait_running("web1", 20)
        killed_at = c.kill("web1")                            # monotonic stamp
        det = c.wait_failure_detected("web1", since=killed_at, timeout=10)
        back = c.wait_restarted("web1", since=killed_at, timeout=10)
        c.stop()

    All methods are synchronous; times are `time.monotonic()` values unless
    a name says `wall`.
    """

    def __init__(self, workdir: Path, name: str | None = None):
        self.workdir = Path(workdir)
        self.rid = netns.run_id()
        self.name = name or f"nfvha-{self.rid}"
        self.ns = netns.NetNS(f"nfvha-{self.rid}-pcmk")
        self.var = self.workdir / "var-lib-pacemaker"
        self.log = self.var / "pacemaker.log"
        self.alert_dir_inside = "/var/lib/pacemaker/nfvha-alerts"
        self.alert_log = self.var / "nfvha-alerts" / "alerts.log"
        self.pid_dir = self.workdir / "pids"
        self.host_netns = self.workdir / "caller-netns"
        self._sup: subprocess.Popen | None = None
        self._resources: dict[str, dict] = {}

    # ----------------------------------------------------------- lifecycle
    def start(self, timeout: float = 90) -> PacemakerCluster:
        for tool in ("corosync", "pacemakerd", "cibadmin", "crm_mon", "nsenter"):
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
                raise ClusterError(f"{tool} is not installed")
        self._prepare_dirs()
        try:
            self.ns.create()
            # the caller's netns, pinned to a file (a bind mount of the nsfs
            # inode) so resources can re-enter it even after we moved threads
            subprocess.run(["umount", str(self.host_netns)], capture_output=True)  # stale
            self.host_netns.touch()
            netns.sh(["mount", "--bind", f"/proc/{os.getpid()}/ns/net", str(self.host_netns)])
            log = open(self.workdir / "supervisor.log", "ab")
            # our mount namespace, handed over as an fd: if we die, the
            # supervisor goes back into it to undo our mounts (/proc/1/ns is
            # not readable on this VM)
            mnt_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
            try:
                self._sup = self.ns.popen(
                    [sys.executable, "-m", "nfvha.verify.deploy.pacemaker", "supervise",
                     str(self.workdir), self.ns.name, str(mnt_fd)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": _package_root()}, pass_fds=(mnt_fd,),
                )
            finally:
                os.close(mnt_fd)
                log.close()
            self._wait_online(timeout)
            self.cib_set("stonith-enabled", "false")
            self.cib_set("no-quorum-policy", "ignore")
            # keep recurring failures from piling up into a ban
            self._run(["crm_attribute", "-t", "rsc_defaults", "-n", "migration-threshold",
                       "-v", "INFINITY"])
            self._install_alert()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 60) -> None:
        """Stops resources, pacemaker and corosync, reaps everything, frees the netns."""
        if self._sup is not None:
            if self._sup.poll() is None:
                self._sup.send_signal(signal.SIGTERM)
                try:
                    self._sup.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._sup.kill()
                    self._sup.wait(5)
            self._sup = None
        # anything still inside the namespace (should be nothing) is killed
        self.ns.delete()
        # the managed processes live in the caller's netns: kill survivors by pidfile
        for pidfile in self.pid_dir.glob("*.pid") if self.pid_dir.exists() else []:
            pid = read_pid(pidfile)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        subprocess.run(["umount", str(self.host_netns)], capture_output=True)

    def __enter__(self) -> PacemakerCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _prepare_dirs(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        uid, gid = _hacluster_ids()
        for sub in ("cib", "pengine", "blackbox", "cores", "nfvha-alerts"):
            d = self.var / sub
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, uid, gid)
            os.chmod(d, 0o770)
        os.chmod(self.var, 0o755)
        (self.workdir / "run-crm").mkdir(exist_ok=True)
        os.chown(self.workdir / "run-crm", uid, gid)
        (self.workdir / "corosync-run").mkdir(exist_ok=True)
        self.pid_dir.mkdir(exist_ok=True)
        for stale in self.pid_dir.glob("*.pid"):
            stale.unlink()
        for stale in (self.var / "cib").glob("*"):
            stale.unlink()  # a fresh CIB each start: no resources from a previous run
        script = self.var / "nfvha-alerts" / "alert.sh"
        script.write_text(ALERT_SCRIPT)
        os.chmod(script, 0o755)
        self.alert_log.write_text("")   # events of an earlier start are not ours
        os.chown(self.alert_log, uid, gid)
        # the daemons running as hacluster may not traverse workdir's parents:
        # their log lives in the bind-mounted dir, pre-created for them
        log = self.var / "pacemaker.log"
        log.touch()
        os.chown(log, uid, gid)
        os.chmod(log, 0o660)
        (self.workdir / "corosync.conf").write_text(self._corosync_conf())

    def _corosync_conf(self) -> str:
        """One node on 127.0.0.1 (token 3000 ms), quorate alone."""
        return corosync_conf(self.name[:32], [(self.node_name, "127.0.0.1")],
                             self.workdir / "corosync-run", self.workdir / "corosync.log",
                             expected_votes=1)

    @property
    def node_name(self) -> str:
        return f"{self.name}-n1"

    def _wait_online(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._sup is not None and self._sup.poll() is not None:
                raise ClusterError(f"supervisor exited ({self._sup.returncode}); "
                                   f"see {self.workdir}/supervisor.log")
            res = self._run(["crm_mon", "--output-as=xml", "-1"], check=False)
            if res.returncode == 0:
                root = ET.fromstring(res.stdout)
                node = root.find(f".//nodes/node[@name='{self.node_name}']")
                dc = root.find(".//summary/current_dc")
                if (node is not None and node.get("online") == "true"
                        and dc is not None and dc.get("present") == "true"):
                    return
            time.sleep(0.5)
        raise ClusterError(f"node not online after {timeout} s; see {self.workdir}")

    def _install_alert(self) -> None:
        xml = (f'<alerts><alert id="nfvha-alert" path="{self.alert_dir_inside}/alert.sh">'
               '<meta_attributes id="nfvha-alert-meta">'
               '<nvpair id="nfvha-alert-ts" name="timestamp-format" value="%H:%M:%S.%06N"/>'
               '</meta_attributes>'
               f'<recipient id="nfvha-alert-r" value="{self.alert_dir_inside}/alerts.log"/>'
               '</alert></alerts>')
        # a fresh CIB has no <alerts> section: create it under <configuration>
        self._run(["cibadmin", "--create", "-o", "configuration", "--xml-text", xml])

    # --------------------------------------------------------------- tools
    def _run(self, argv: Sequence[str], check: bool = True, timeout: float = 30):
        res = self.ns.run(argv, check=False, timeout=timeout)
        if check and res.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def cib_set(self, name: str, value: str) -> None:
        """Sets a crm_config cluster property."""
        self._run(["crm_attribute", "-t", "crm_config", "-n", name, "-v", value])

    def status_xml(self) -> ET.Element:
        return ET.fromstring(self._run(["crm_mon", "--output-as=xml", "-1"]).stdout)

    # ----------------------------------------------------------- resources
    def add_process_resource(
        self,
        name: str,
        argv: Sequence[str],
        monitor_ms: int = 100,
        netns_name: str | None = None,
        env: dict[str, str] | None = None,
        logfile: Path | None = None,
        start_timeout_s: int = 20,
        stop_timeout_s: int = 20,
        monitor_check: Sequence[str] | None = None,
        term_grace_s: int | None = None,
    ) -> None:
        """An ocf:heartbeat:anything resource running `argv` (absolute path first).

        The process runs in `netns_name` (an `ip netns` name) or, by default,
        in the caller's network namespace. Intervals are written in ms
        (`0.5s` is stored by Pacemaker but never runs).

        The agent's monitor only checks that the pid lives (`kill -0`), so a
        frozen (SIGSTOPped) process passes. `monitor_check` adds a health
        check run at every monitor in the resource's namespace, non-zero exit
        = failed, e.g. `["/usr/bin/curl", "-sf", "-m", "0.3", "-o", "/dev/null",
        "http://127.0.0.1:8081/"]`. `term_grace_s`: seconds the agent's stop
        waits after SIGTERM before SIGKILL (default 2/3 of the stop timeout;
        a stopped process ignores SIGTERM until then).
        """
        if int(monitor_ms) <= 0:
            raise ValueError("monitor_ms must be a positive integer")
        wrapper = self.workdir / f"run-{name}.sh"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
        enter = (["ip", "netns", "exec", netns_name] if netns_name
                 else ["nsenter", f"--net={self.host_netns}"])
        # exec all the way down: the pid the agent records is argv's own pid
        wrapper.write_text("#!/bin/sh\n" + exports
                           + "exec " + shlex.join([*enter, *argv]) + "\n")
        os.chmod(wrapper, 0o755)
        pidfile = self.pid_dir / f"{name}.pid"
        params = {"binfile": str(wrapper), "pidfile": str(pidfile),
                  "logfile": str(logfile or self.workdir / f"{name}.log"),
                  "workdir": str(self.workdir)}
        if monitor_check:
            # execd runs the agent inside the cluster's netns: enter the
            # resource's own namespace for the check too. The agent's start
            # runs the monitor at once, before the service can answer: during
            # start the check is retried (every 0.1 s, up to start timeout/2).
            check = shlex.join([*enter, *monitor_check])
            tries = max(1, int(start_timeout_s * 5))
            hook = self.workdir / f"check-{name}.sh"
            hook.write_text(
                "#!/bin/sh\n"
                'if [ "$1" = start ]; then\n'
                f"  i=0; while [ $i -lt {tries} ]; do\n"
                f"    {check} >/dev/null 2>&1 && exit 0\n"
                "    sleep 0.1; i=$((i+1))\n"
                "  done\n"
                "  exit 1\n"
                "fi\n"
                f"exec {check} >/dev/null 2>&1\n")
            os.chmod(hook, 0o755)
            params["monitor_hook"] = f"{hook} $__OCF_ACTION"
        if term_grace_s is not None:
            params["stop_timeout"] = str(int(term_grace_s))
        nv = "".join(f'<nvpair id="{name}-ia-{k}" name="{k}" value="{_xml_attr(v)}"/>'
                     for k, v in params.items())
        xml = (f'<primitive id="{name}" class="ocf" provider="heartbeat" type="anything">'
               f'<instance_attributes id="{name}-ia">{nv}</instance_attributes>'
               f'<operations>'
               f'<op id="{name}-start" name="start" interval="0" timeout="{start_timeout_s}s"/>'
               f'<op id="{name}-stop" name="stop" interval="0" timeout="{stop_timeout_s}s"/>'
               f'<op id="{name}-monitor" name="monitor" interval="{int(monitor_ms)}ms" '
               f'timeout="10s"/>'
               f'</operations></primitive>')
        self._run(["cibadmin", "--create", "-o", "resources", "--xml-text", xml])
        self._resources[name] = {"argv": list(argv), "pidfile": pidfile}

    def remove_resource(self, name: str, timeout: float = 30) -> None:
        """Stops the resource and deletes it from the CIB."""
        self._run(["crm_resource", "-r", name, "--set-parameter", "target-role",
                   "--meta", "--parameter-value", "Stopped"], check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.resource_state(name) not in (None, "Stopped"):
            time.sleep(0.1)
        self._run(["cibadmin", "--delete", "-o", "resources", "--xml-text",
                   f'<primitive id="{name}"/>'], check=False)
        self._run(["crm_resource", "--cleanup", "-r", name], check=False)
        self._resources.pop(name, None)

    def cleanup(self, name: str) -> None:
        """Clears the resource's fail count and operation history."""
        self._run(["crm_resource", "--cleanup", "-r", name])

    def resource_state(self, name: str) -> str | None:
        """'Started' | 'Stopped' | 'Starting' | 'FAILED' ... or None if unknown."""
        root = self.status_xml()
        r = root.find(f".//resources/resource[@id='{name}']")
        if r is None:
            return None
        if r.get("failed") == "true":
            return "FAILED"
        return r.get("role")

    def resource_pid(self, name: str) -> int | None:
        """The managed process's pid (from the agent's pidfile), if it is alive."""
        pid = read_pid(self.pid_dir / f"{name}.pid")
        if pid is None:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        if is_zombie(pid):
            return None
        return pid

    def wait_running(self, name: str, timeout: float) -> int:
        """Waits until Pacemaker reports the resource Started and its process lives.

        Also waits until the wall-clock second of the last start has passed:
        Pacemaker 2.1.5 stamps operations in whole seconds, and a monitor
        failure in the same second as the start was seen to be ignored
        ("Leave ... Started", no recovery for 20 s and more).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.resource_pid(name)
            if pid is not None and self.resource_state(name) == "Started":
                starts = [e for e in self.op_events(name) if e.task == "start" and e.rc == 0]
                if starts:
                    settle = int(starts[-1].wall) + 1.05 - time.time()
                    if settle > 0:
                        time.sleep(settle)
                return pid
            time.sleep(0.05)
        raise ClusterError(f"{name} not running after {timeout} s (state "
                           f"{self.resource_state(name)}); see {self.workdir}/{name}.log")

    def fail_count(self, name: str) -> int:
        res = self._run(["crm_failcount", "-G", "-r", name, "-N", self.node_name, "-q"],
                        check=False)
        return _int(res.stdout.strip().splitlines()[-1]) or 0 if res.stdout.strip() else 0

    # --------------------------------------------------------------- faults
    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Fault hook: sends `sig` (kill -9 by default) to the managed process.

        Returns time.monotonic() taken just before the signal is sent.
        """
        pid = self.resource_pid(name)
        if pid is None:
            raise ClusterError(f"{name} has no live process")
        t = time.monotonic()
        os.kill(pid, sig)
        return t

    # --------------------------------------------------------------- alerts
    def op_events(self, name: str | None = None) -> list[OpEvent]:
        """Every operation alert so far (optionally for one resource), in order."""
        offset = _mono_offset()
        out = []
        try:
            lines = self.alert_log.read_text().splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            f = line.split(" ")
            if len(f) < 9 or not f[0].isdigit():
                continue
            wall = int(f[0]) + int(f[1] or 0) / 1e6
            ev = OpEvent(wall=wall, mono=wall - offset, kind=f[2], rsc=f[3], task=f[4],
                         rc=_int(f[5]), interval_ms=_int(f[6]), target_rc=_int(f[7]),
                         status=f[8])
            if name is None or ev.rsc == name:
                out.append(ev)
        return out

    def failure_detected(self, name: str, since: float) -> OpEvent | None:
        """The first failed monitor of `name` stamped at or after `since` (monotonic)."""
        for ev in self.op_events(name):
            if ev.kind == "resource" and ev.task == "monitor" and ev.failed \
                    and ev.mono >= since - 0.002:
                return ev
        return None

    def restarted(self, name: str, since: float) -> OpEvent | None:
        """The first successful start of `name` after its failure following `since`."""
        det = self.failure_detected(name, since)
        if det is None:
            return None
        for ev in self.op_events(name):
            if ev.task == "start" and ev.rc == 0 and ev.mono >= det.mono:
                return ev
        return None

    def wait_failure_detected(self, name: str, since: float, timeout: float) -> OpEvent:
        return self._wait(lambda: self.failure_detected(name, since), timeout,
                          f"no failure of {name} detected")

    def wait_restarted(self, name: str, since: float, timeout: float) -> OpEvent:
        try:
            return self._wait(lambda: self.restarted(name, since), timeout,
                              f"{name} not restarted")
        except ClusterError as exc:
            # what Pacemaker did meanwhile, to tell a slow restart from a missed one
            seen = [f"{e.task} rc={e.rc} {e.status} at {e.mono - since:+.3f}s"
                    for e in self.op_events(name) if e.mono >= since - 1.0]
            raise ClusterError(f"{exc}; its operations since the fault: "
                               f"{'; '.join(seen) or 'none'}") from None

    @staticmethod
    def _wait(fn, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = fn()
            if v is not None:
                return v
            time.sleep(0.01)
        v = fn()
        if v is None:
            raise ClusterError(f"{what} within {timeout} s")
        return v


def _xml_attr(v: str) -> str:
    return (v.replace("&", "&amp;").replace('"', "&quot;")
            .replace("<", "&lt;").replace(">", "&gt;"))


def _hacluster_ids() -> tuple[int, int]:
    import grp
    import pwd

    return pwd.getpwnam("hacluster").pw_uid, grp.getgrnam("haclient").gr_gid


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[3])


# ------------------------------------------------------------------ supervisor
def supervise(workdir: Path, ns_name: str | None = None,
              caller_mnt_fd: int | None = None) -> int:
    """Runs inside the cluster's netns (and ip-netns-exec's mount namespace).

    A child subreaper: every orphan (the `anything` agent's nohup'ed
    process, agents' helpers) is reparented here and reaped at once.
    """
    sr = Subreaper(("corosync", "pacemakerd"), exit_note="exited unexpectedly")
    say = sr.say

    var = workdir / "var-lib-pacemaker"
    subprocess.run(["mount", "--bind", str(var), "/var/lib/pacemaker"], check=True)
    # corosync refuses to start while another instance holds its compiled-in
    # lock file /var/run/corosync.pid: give ours a private one (bind mount over
    # the path; the empty file is created first if no corosync ever ran).
    lock = workdir / "corosync.pid"
    lock.touch()
    os.close(os.open("/run/corosync.pid", os.O_WRONLY | os.O_CREAT, 0o640))
    subprocess.run(["mount", "--bind", str(lock), "/run/corosync.pid"], check=True)
    if os.path.isdir("/run/crm"):   # only exists once a system pacemaker ran
        subprocess.run(["mount", "--bind", str(workdir / "run-crm"), "/run/crm"], check=True)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "COROSYNC_MAIN_CONFIG_FILE": str(workdir / "corosync.conf"),
        "PCMK_logfile": "/var/lib/pacemaker/pacemaker.log",   # = var-lib-pacemaker/
        "PCMK_logfacility": "none",
        "PCMK_debug": "no",
        "HA_LOGFACILITY": "none",
        "HA_debug": "0",
    }
    # sr.unblock as preexec_fn: a daemon started with SIGCHLD and SIGTERM
    # blocked busy-loops (pacemaker-based at 100% CPU) and never stops
    unblock = sr.unblock
    coro = subprocess.Popen(["corosync", "-f", "-c", str(workdir / "corosync.conf")], env=env,
                            stdout=subprocess.DEVNULL, preexec_fn=unblock,
                            stderr=open(workdir / "corosync.stderr", "ab"))
    sr.procs["corosync"] = coro
    say(f"corosync pid {coro.pid}")
    pcmk: subprocess.Popen | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and coro.poll() is None:
        r = subprocess.run(["corosync-cmapctl", "-g", "totem.cluster_name"], env=env,
                           capture_output=True, preexec_fn=unblock)
        if r.returncode == 0:
            pcmk = subprocess.Popen(["pacemakerd"], env=env, stdout=subprocess.DEVNULL,
                                    preexec_fn=unblock,
                                    stderr=open(workdir / "pacemakerd.stderr", "ab"))
            sr.procs["pacemakerd"] = pcmk
            say(f"pacemakerd pid {pcmk.pid}")
            break
        time.sleep(0.2)
    if pcmk is None:
        say("corosync did not come up")
    orphaned = False
    while True:
        info = sr.wait(1.0)
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
            break
        if coro.returncode is not None and (pcmk is None or pcmk.returncode is not None):
            break
        if sr.caller_died():
            say("our caller died; cleaning up")
            orphaned = True
            break
    sr.stopping = True
    say("stopping")
    if pcmk is not None and pcmk.returncode is None:
        pcmk.send_signal(signal.SIGTERM)      # stops resources, then the daemons
        sr.wait_gone(pcmk, 45)
    if coro.returncode is None:
        coro.send_signal(signal.SIGTERM)
        sr.wait_gone(coro, 15)
    # whatever is left below us (orphans reparented here) goes too
    sr.kill_leftovers()
    if orphaned:
        # nobody will call stop(): drop what the caller set up in the initial
        # mount namespace (we only see a slave copy of it), then our netns name
        if caller_mnt_fd is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(caller_mnt_fd, CLONE_NEWNS) != 0:
                say(f"setns to the caller's mount namespace failed: {ctypes.get_errno()}")
            else:
                subprocess.run(["umount", str(workdir / "caller-netns")], capture_output=True)
                if ns_name:
                    subprocess.run(["ip", "netns", "delete", ns_name], capture_output=True)
    say("stopped")
    return 0


def _tree_cpu_seconds(root: int) -> float:
    """CPU time (own + reaped children) of `root` and every descendant."""
    kids: dict[int, list[int]] = {}
    cpu: dict[int, int] = {}
    for pid, fields in proc_stats():
        kids.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0)
        todo += kids.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def measure_monitor_cost(workdir: Path, counts: Sequence[int] = (0, 4, 8),
                         monitor_ms: int = 100, window_s: float = 10.0) -> list[tuple[int, float]]:
    """CPU share of one core the whole cluster uses with N idle resources.

    Prints and returns [(N, percent)]. Needs ~25 s + len(counts) * window.
    """
    out = []
    with PacemakerCluster(workdir) as c:
        assert c._sup is not None
        have = 0
        for n in counts:
            for i in range(have, n):
                c.add_process_resource(f"cost{i}", ["/usr/bin/sleep", "100000"],
                                       monitor_ms=monitor_ms)
            have = max(have, n)
            for i in range(n):
                c.wait_running(f"cost{i}", 30)
            time.sleep(2)
            a, t = _tree_cpu_seconds(c._sup.pid), time.monotonic()
            time.sleep(window_s)
            b, u = _tree_cpu_seconds(c._sup.pid), time.monotonic()
            pct = 100 * (b - a) / (u - t)
            print(f"{n} resources, monitor {monitor_ms} ms: cluster CPU {pct:.1f}% of one core",
                  flush=True)
            out.append((n, pct))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) in (2, 3, 4) and args[0] == "supervise":
        return supervise(Path(args[1]), args[2] if len(args) > 2 else None,
                         int(args[3]) if len(args) > 3 else None)
    if len(args) >= 2 and args[0] == "cost":
        measure_monitor_cost(Path(args[1]), [int(a) for a in args[2:]] or (0, 4, 8))
        return 0
    print("usage: python -m nfvha.verify.deploy.pacemaker supervise WORKDIR [NETNS [MNT_FD]]\n"
          "       python -m nfvha.verify.deploy.pacemaker cost WORKDIR [N ...]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
