"""Namespaces as SSH hosts: a private `sshd` in each node namespace (synchronous).

What remote deployments are tested with (docs/verify.md, "Remote
deployments"): `SshHosts` builds a `netns.Lan` (nodes a and b, a client
namespace with the bridge) and runs Debian's OpenSSH server inside each
node namespace on the node's private address and port 2222, with

* a host key and a client key made for this run only (ed25519, in `workdir`),
* a private sshd config (`-f`), its own pid file and authorized_keys file,
  and root login by that key only — the system's /etc/ssh/sshd_config,
  host keys and /root/.ssh are never read or written,
* a known_hosts file with exactly the host keys made here
  (StrictHostKeyChecking=yes: a wrong host is refused, not learned).

The engine stays in the initial namespace, which has no route to the
namespaces (no address is ever added there), so ssh reaches the nodes the
way it reaches hosts behind a bastion: `ProxyCommand` opens the TCP
connection from the client namespace (`ip netns exec <client> socat`).
`pod()` writes all that as a Yardstick pod file for `nodes.from_pod`.

sshd needs its privilege-separation directory /run/sshd (Debian creates it
at service start; we create it, empty, if it is missing).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from nfvha.verify.deploy import netns
from nfvha.verify.deploy.procfs import stop_all

SSH_PORT = 2222
NODES = ("a", "b")

SSHD_CONFIG = """Port {port}
ListenAddress {addr}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
UseDNS no
MaxStartups 50:30:100
MaxSessions 50
LogLevel ERROR
"""


class SshHosts:
    """Two namespaces running sshd, reachable over ssh from this process.

    ::

        with SshHosts(tmp) as hosts:
            nodes = nodes.from_pod(hosts.pod())      # {"node-a": SshNode, ...}
            await nodes["node-a"].run(["hostname", "-I"])
    """

    def __init__(self, workdir: Path, net: int = 0, port: int = SSH_PORT):
        for tool in ("/usr/sbin/sshd", "ssh", "ssh-keygen", "socat"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed")
        self.workdir = Path(workdir)
        self.port = port
        self.lan = netns.Lan(net=net)
        self.client_key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def addr(self) -> dict[str, str]:
        return self.lan.addr

    def _path(self, node: str, name: str) -> Path:
        return self.workdir / f"{node}-{name}"

    def start(self, timeout: float = 15) -> SshHosts:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        try:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
            self.lan.create()
            _keygen(self.client_key, "nfvha-verify-client")
            known = []
            for node in NODES:
                host_key = self._path(node, "host_ed25519")
                _keygen(host_key, f"nfvha-verify-host-{node}")
                known.append(f"[{self.addr[node]}]:{self.port} "
                             + host_key.with_suffix(".pub").read_text().strip())
                auth = self._path(node, "authorized_keys")
                auth.write_text(self.client_key.with_suffix(".pub").read_text())
                auth.chmod(0o600)
                cfg = self._path(node, "sshd_config")
                cfg.write_text(SSHD_CONFIG.format(
                    port=self.port, addr=self.addr[node], host_key=host_key,
                    pid_file=self._path(node, "sshd.pid"), authorized_keys=auth))
                log = open(self._path(node, "sshd.log"), "ab")
                # -D: stay our child (ends with the namespace), -e: log to the file
                self._procs[node] = self.lan.nodes[node].popen(
                    ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                log.close()
            self.known_hosts.write_text("\n".join(known) + "\n")
            for node in NODES:
                self._wait_listening(node, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, node: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            p = self._procs[node]
            if p.poll() is not None:
                raise RuntimeError(f"sshd on node {node} exited: "
                                   + self._path(node, "sshd.log").read_text()[-500:])
            s = self.lan.client.socket()
            s.settimeout(0.5)
            try:
                s.connect((self.addr[node], self.port))
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
            except OSError:
                pass
            finally:
                s.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"sshd on node {node} not answering within {timeout} s")
            time.sleep(0.05)

    def ssh_options(self) -> list[str]:
        """-o options that reach a node: this run's known hosts only, through
        the client namespace."""
        return [f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                "StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "LogLevel=ERROR",
                f"ProxyCommand=ip netns exec {self.lan.client.name} socat STDIO TCP:%h:%p,nodelay"]

    def pod(self, multiplex: bool = True) -> dict:
        """A Yardstick-style pod file describing the two nodes."""
        nodes = []
        for node in NODES:
            n = {"name": f"node-{node}", "role": "Controller", "ip": self.addr[node],
                 "user": "root", "key_filename": str(self.client_key), "ssh_port": self.port,
                 "ssh_config": "/dev/null", "ssh_options": self.ssh_options()}
            if multiplex:
                n["control_path"] = str(self.workdir / f"cm-{node}")
            nodes.append(n)
        return {"nodes": nodes}

    def stop(self) -> None:
        # ssh masters (ControlPersist) live in the initial namespace: end them
        # by their control sockets before the hosts go.
        for node in NODES:
            cm = self.workdir / f"cm-{node}"
            if cm.exists():
                subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={cm}",
                                "-O", "exit", f"root@{self.addr[node]}"],
                               capture_output=True, timeout=10, check=False)
        stop_all(self._procs.values())
        self.lan.delete()      # also kills anything a session left inside

    def __enter__(self) -> SshHosts:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _keygen(path: Path, comment: str) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, capture_output=True, timeout=15)
