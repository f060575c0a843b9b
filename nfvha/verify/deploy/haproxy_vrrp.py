"""Two HAProxy load balancers behind a keepalived VIP (Yardstick tc053's setup).

`LbPair` is a `VrrpPair` (deploy/keepalived.py: node namespaces a and b on a
bridge, keepalived VRRP v3, advert_int 0.1 s, nopreempt) whose tracked
*service* on each node is HAProxy (Debian, `haproxy -db -f <node cfg>`:
one foreground process) listening on :8080. Behind both load balancers: one
API instance per node (`python -m nfvha.verify.backend`, :9000 on the
node's address), health-checked (`inter 100 fall 2 rise 2`), so either
HAProxy reaches both instances, as on real controllers.

Each answer says which instance served it and through which load
balancer: HAProxy rewrites `X-Served-By` to `<instance> via lb node-<n>`.

`track=False` is the broken variant: keepalived without
`vrrp_track_process` — it never learns that HAProxy died, so the VIP stays
on a node that cannot answer until HAProxy is restarted there.

Under a `PacemakerCluster` the instances, both HAProxy processes and both
keepalived daemons are ocf:heartbeat:anything resources (monitor 100 ms).
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from nfvha.verify.deploy.keepalived import NODES, VrrpPair
from nfvha.verify.deploy.pacemaker import PacemakerCluster
from nfvha.verify.haproxy import HaproxyConfig

APP_PORT = 9000

def available() -> str | None:
    for tool in ("/usr/sbin/haproxy", "/usr/sbin/keepalived"):
        if not Path(tool).exists() and shutil.which(Path(tool).name) is None:
            return f"{tool} is not installed"
    return None


class LbPair(VrrpPair):
    """HAProxy on both nodes of a VRRP pair; see module doc."""

    def __init__(self, workdir: Path, cluster: PacemakerCluster | None = None,
                 advert_int: float = 0.1, net: int = 53, port: int = 8080,
                 monitor_ms: int = 100, track: bool = True):
        super().__init__(workdir, cluster, advert_int=advert_int, net=net, port=port,
                         monitor_ms=monitor_ms, track="process")
        self.tracking = track

    def app_argv(self, node: str) -> list[str]:
        return [sys.executable, "-m", "nfvha.verify.backend", "--host",
                self.lan.addr[node], "--port", str(APP_PORT), "--name", f"api-{node}"]

    def service_argv(self, node: str) -> list[str]:
        # the full command line names this node's config: keepalived's
        # process match never counts the other node's HAProxy
        return ["/usr/sbin/haproxy", "-db", "-f", str(self._path(node, "haproxy.cfg"))]

    def _write_files(self, node: str) -> None:
        super()._write_files(node)
        cfg = HaproxyConfig(self.port, [(f"api-{n}", APP_PORT) for n in NODES],
                            bind="0.0.0.0", backend="api",
                            server_host=tuple((f"api-{n}", self.lan.addr[n]) for n in NODES),
                            served_via=f"lb node-{node}")
        self._path(node, "haproxy.cfg").write_text(cfg.render())
        if not self.tracking:
            conf = self._path(node, "keepalived.conf")
            text = conf.read_text()
            text = re.sub(r"vrrp_track_process service_\w+ \{[^}]*\}\n", "", text)
            text = re.sub(r"\n\s*track_process \{[^}]*\}", "", text)
            conf.write_text(text)

    def _launch(self, node: str, what: str, argv: list[str], ns_name: str | None) -> None:
        if what == "service":       # the API instance first: HAProxy's checks find it up
            super()._launch(node, "app", self.app_argv(node), ns_name)
        super()._launch(node, what, argv, ns_name)

    def stop(self) -> None:
        if self.cluster is not None:
            for node in NODES:
                try:
                    self.cluster.remove_resource(self.resource(node, "app"))
                except Exception:  # noqa: BLE001 - cleanup goes on regardless
                    pass
        super().stop()

    def haproxy_pid(self, node: str) -> int | None:
        return self.service_pid(node)
