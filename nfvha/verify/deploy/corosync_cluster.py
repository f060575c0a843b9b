"""A three-node Corosync/Pacemaker cluster in network namespaces (tc057's setup).

Building block for Yardstick tc057 ("the cluster manager fails": corosync
killed on one node). Each node is a `PacemakerCluster` (deploy/pacemaker.py:
its own network namespace, private /var/lib/pacemaker and corosync lock,
its supervisor reaping orphans) whose namespace is wired to a shared bridge
(`nfvha-<rid>-lan`, node i at 10.214.<net>.i/24) and whose corosync.conf
lists all three nodes (knet over those addresses, `token` 1000 ms,
votequorum with three votes). Resources can run in the LAN namespace
(`netns_name=cluster.lan.name`), which every node reaches.

Fencing: `enable_fencing()` adds a fence device for the namespace nodes
(deploy/fence_netns.py: powers a node's whole process tree off), sets
stonith-enabled true and no-quorum-policy stop. Without it (the
single-node class's defaults: stonith-enabled false, no-quorum-policy
ignore) a killed corosync leaves the node's pacemaker and its resources
running while the survivors start the resource again: two copies.

Measured (tests/test_deploy_corosync_cluster.py, kill -9 of corosync on the
node running an HTTP resource): the survivors form a membership without it
after ~3.4 s (token 1000 ms: token timeout + consensus), fence it ~1.5 s
later, and the resource serves from a survivor ~6.7 s after the kill. In
every run the first start on the survivor did not last: its monitor failed
~1.3 s later and Pacemaker started it again (cause not pinned down yet; the
old copy's pid in the shared pidfile is the suspect). That second is part
of the figure.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import threading
import time
from pathlib import Path

from nfvha.verify.deploy import netns
from nfvha.verify.deploy.pacemaker import ClusterError, PacemakerCluster, corosync_conf

_MEMBERSHIP = re.compile(r"^(\w{3} \d\d \d\d:\d\d:\d\d\.\d+) .*A new membership \(([^)]*)\) "
                         r"was formed\. Members (left|joined): ([\d ]+)")


class _NodeNS(netns.NetNS):
    """A node's namespace, wired to the cluster's bridge when created."""

    def __init__(self, name: str, lan: netns.NetNS, ifname: str, port: str, addr: str):
        super().__init__(name)
        self.lan, self.ifname, self.port, self.addr = lan, ifname, port, addr

    def create(self) -> _NodeNS:
        super().create()
        netns.veth(self, self.ifname, self.lan, self.port)
        self.run(["ip", "addr", "add", f"{self.addr}/24", "dev", self.ifname])
        self.lan.run(["ip", "link", "set", self.port, "master", "br0"])
        return self


class ClusterNode(PacemakerCluster):
    """One member of a multi-node cluster (see module doc)."""

    def __init__(self, workdir: Path, cluster: str, index: int,
                 members: list[tuple[str, str]], lan: netns.NetNS, rid: str,
                 token_ms: int = 1000):
        super().__init__(workdir, name=cluster)
        self.index, self.members, self.token_ms = index, members, token_ms
        self.ns = _NodeNS(f"nfvha-{rid}-n{index}", lan, f"nh{rid}n{index}",
                          f"nh{rid}p{index}", members[index - 1][1])

    @property
    def node_name(self) -> str:
        return self.members[self.index - 1][0]

    def _corosync_conf(self) -> str:
        return corosync_conf(self.name[:32], self.members, self.workdir / "corosync-run",
                             self.workdir / "corosync.log", token_ms=self.token_ms)

    def _install_alert(self) -> None:
        try:
            super()._install_alert()
        except ClusterError as exc:       # the CIB is shared: the first node made it
            if "exists" not in str(exc).lower() and "not unique" not in str(exc).lower():
                raise

    def supervisor_pid(self) -> int | None:
        """The node's supervisor (`ip netns exec` execs it: the Popen's own pid)."""
        return self._sup.pid if self._sup is not None and self._sup.poll() is None else None

    def corosync_pid(self) -> int | None:
        for pid in netns.pids_in(self.ns.name):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "corosync":
                        return pid
            except OSError:
                continue
        return None

    def memberships(self) -> list[tuple[float, str, str, list[int]]]:
        """(monotonic, ring id, 'left'|'joined', node ids) from this node's corosync log."""
        try:
            lines = (self.workdir / "corosync.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        offset = time.time() - time.monotonic()
        year = dt.datetime.now().year
        out = []
        for line in lines:
            m = _MEMBERSHIP.match(line)
            if m:
                wall = dt.datetime.strptime(f"{year} {m.group(1)}", "%Y %b %d %H:%M:%S.%f")
                out.append((wall.timestamp() - offset, m.group(2), m.group(3),
                            [int(x) for x in m.group(4).split()]))
        return out


class CorosyncCluster:
    """`n` ClusterNodes on one bridge; node 1 is `nodes[0]`."""

    def __init__(self, workdir: Path, n: int = 3, net: int = 0, token_ms: int = 1000):
        self.workdir = Path(workdir)
        self.rid = netns.run_id()
        self.name = f"nfvha-{self.rid}"
        self.lan = netns.NetNS(f"nfvha-{self.rid}-lan")
        self.members = [(f"nfvha-{self.rid}-n{k}", f"10.214.{net}.{k}") for k in range(1, n + 1)]
        self.nodes = [ClusterNode(self.workdir / f"n{k}", self.name, k, self.members, self.lan,
                                  self.rid, token_ms) for k in range(1, n + 1)]

    def start(self, timeout: float = 120) -> CorosyncCluster:
        try:
            self.lan.create()
            self.lan.run(["ip", "link", "add", "br0", "type", "bridge"])
            self.lan.run(["ip", "link", "set", "br0", "type", "bridge", "forward_delay", "0",
                          "stp_state", "0"])
            self.lan.run(["ip", "link", "set", "br0", "up"])
            errors: list[str] = []

            def one(node: ClusterNode) -> None:
                try:
                    node.start(timeout)
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(f"{node.node_name}: {exc}")

            threads = [threading.Thread(target=one, args=(nd,)) for nd in self.nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise ClusterError("; ".join(errors))
            self.wait_online(len(self.nodes), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def online(self, via: int = 1) -> list[str]:
        root = self.nodes[via - 1].status_xml()
        return [n.get("name") for n in root.findall(".//nodes/node")
                if n.get("online") == "true"]

    def wait_online(self, n: int, timeout: float, via: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            on = self.online(via)
            if len(on) >= n or time.monotonic() >= deadline:
                if len(on) < n:
                    raise ClusterError(f"only {on} online after {timeout} s")
                return on
            time.sleep(0.5)

    def located(self, resource: str, via: int) -> list[str]:
        """Nodes where the cluster (asked through node `via`) says `resource` runs."""
        res = self.nodes[via - 1]._run(["crm_resource", "-W", "-r", resource], check=False)
        return re.findall(r"running on: (\S+)", res.stdout)

    def prefer(self, resource: str, node: int, score: int = 100) -> None:
        self.nodes[0]._run(["cibadmin", "--create", "-o", "constraints", "--xml-text",
                            f'<rsc_location id="loc-{resource}" rsc="{resource}" '
                            f'node="{self.members[node - 1][0]}" score="{score}"/>'])

    def kill_corosync(self, node: int) -> float:
        pid = self.nodes[node - 1].corosync_pid()
        if pid is None:
            raise ClusterError(f"no corosync on node {node}")
        t = time.monotonic()
        os.kill(pid, 9)
        return t

    def enable_fencing(self, timeout: float = 60) -> None:
        """A fence device that powers a namespace node off (deploy/fence_netns.py),
        stonith-enabled true. The agent is bind-mounted over /usr/sbin/fence_legacy
        inside each node's mount namespace only (pacemaker-fenced runs agents
        from /usr/sbin); the system's file is untouched."""
        agent = self.workdir / "fence_agent"
        shutil.copyfile(Path(__file__).with_name("fence_netns.py"), agent)
        os.chmod(agent, 0o755)
        fmap = self.workdir / "fence.map"
        fmap.write_text("".join(f"{nd.node_name} {nd.supervisor_pid()}\n" for nd in self.nodes))
        for nd in self.nodes:
            netns.sh(["nsenter", f"--mount=/proc/{nd.supervisor_pid()}/ns/mnt", "mount",
                      "--bind", str(agent), "/usr/sbin/fence_legacy"])
        hosts = " ".join(n for n, _ in self.members)
        self.nodes[0]._run(["cibadmin", "--create", "-o", "resources", "--xml-text",
                            '<primitive id="fence-ns" class="stonith" type="fence_legacy">'
                            '<instance_attributes id="fence-ns-ia">'
                            f'<nvpair id="fence-ns-map" name="map_file" value="{fmap}"/>'
                            f'<nvpair id="fence-ns-hosts" name="pcmk_host_list" value="{hosts}"/>'
                            '</instance_attributes><operations>'
                            '<op id="fence-ns-monitor" name="monitor" interval="60s"/>'
                            '</operations></primitive>'])
        self.nodes[0].cib_set("stonith-enabled", "true")
        self.nodes[0].cib_set("no-quorum-policy", "stop")
        deadline = time.monotonic() + timeout
        while self.nodes[0].resource_state("fence-ns") != "Started":
            if time.monotonic() > deadline:
                raise ClusterError(f"fence device not started after {timeout} s")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception:  # noqa: BLE001 - the others still go
                pass
        self.lan.delete()
