"""One `nfvha verify run` invocation's shared deployments.

Below the runner and the scenario dispatchers that take a session
(yardstick, scenarios/middleware): the imports point one way.
"""
from __future__ import annotations


class Session:
    """One invocation's shared deployments (started on first use, stopped at the end)."""

    def __init__(self, cluster_manager: str = "auto") -> None:
        from .restarters import SharedCluster
        self.cluster_manager = cluster_manager
        self.shared = SharedCluster()
        self._aa = None
        self._keystone = None

    def active_active(self):
        if self._aa is None:
            from .scenarios.active_active import Instances
            self._aa = Instances(cluster_manager=self.cluster_manager, shared=self.shared)
        return self._aa

    def keystone(self):
        """Three Keystone instances (database, keys) for keystone and keystone-nohealth."""
        if self._keystone is None:
            from .scenarios.keystone import KeystoneInstances
            self._keystone = KeystoneInstances(cluster_manager=self.cluster_manager,
                                               shared=self.shared)
        return self._keystone

    async def cluster(self):
        """The shared Pacemaker cluster, or None (with the reason) when the
        cluster manager is 'supervisor', or 'auto' where Pacemaker cannot run
        (no root, not installed). Where it can run, a cluster that fails to
        start is an error (RuntimeError), never a silent run without it."""
        from .restarters import available
        if self.cluster_manager == "supervisor":
            return None, "--cluster-manager supervisor"
        why = available()
        if why is not None and self.cluster_manager == "auto":
            return None, f"Pacemaker cannot run here: {why}"
        return await self.shared.get(), None

    async def close(self) -> None:
        for attr in ("_aa", "_keystone"):
            inst = getattr(self, attr)
            if inst is not None:
                setattr(self, attr, None)
                await inst.stop()
        await self.shared.stop()
