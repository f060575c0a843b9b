"""tc046, a real OpenStack API service as the victim: Keystone behind HAProxy.

Deployment (`KeystoneInstances`, shared by `keystone` and
`keystone-nohealth` in one invocation): Keystone 30 from PyPI
(nfvha/verify/deploy/keystone.py) — one MariaDB database, one config and
one fernet key repository for all — as three instances s1–s3, each gunicorn
(one worker, 4 threads) on 127.0.0.1, each a resource of the invocation's
Pacemaker cluster (ocf:heartbeat:anything, monitor every 100 ms) or, where
Pacemaker cannot run, of nfvha's stand-in supervisor (Req 5.4.5 then fails
with "no cluster manager"). HAProxy in front: the active/active set-up of
scenarios/active_active.py (`inter 100 fall 2 rise 2`, `option httpchk GET
/v3`, redispatch, retries 3; HAProxy names the server in `X-Served-By`).

Clients: real token requests through HAProxy — four clients, each back to
back on its own keep-alive connection (a token costs a Keystone 0.05–0.5 s
here; one client would leave the timeline sampled every few hundred ms) —
POST /v3/auth/tokens, password method, scoped to the admin project; ok =
201 with an X-Subject-Token. A failed request is timed when its failure
came back (one in flight at the kill fails just after it). "Serving again": GET
/v3 on the victim's own port answers 200 (gunicorn listens before its
worker has loaded Keystone).

Fault: kill -9 of s2's gunicorn master and its worker (Yardstick's
kill-process kills every keystone process on the node; a worker left
behind would keep serving on the inherited socket).

`keystone-nohealth` is the broken variant: HAProxy without health checks.
It keeps sending requests to the dead instance (each refused, retried and
redispatched), never marks it DOWN and raises no alarm: Req 5.4.2, 5.4.3
and 5.4.4 fail.

Verdicts: the model's active-active checks, Req 5.4.1–5.4.5 (the seed's
Table 3 puts keystone under Active/Active).
"""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

from .. import restarters
from .. import sal as sal_mod
from ..engine import Phases, free_port
from ..metrics import Measurement
from ..model import Model
from ..probes import HttpProbe, ParallelProbe
from ..timeline import Record
from . import active_active as aa

if TYPE_CHECKING:
    from ..results import ScenarioResult

NAME = "keystone"
BROKEN = "keystone-nohealth"
NAMES = (NAME, BROKEN)
TOKENS = "/v3/auth/tokens"
CLIENTS = 4


class HasKeystone(Protocol):
    """The invocation's session (session.py imports this module: no import back)."""

    def keystone(self) -> KeystoneInstances: ...


def available() -> Optional[str]:
    from ..deploy.keystone import available as deploy_available
    return deploy_available()


class KeystoneInstances(aa.Instances):
    """Three Keystone instances on one database, kept alive by a restarter."""

    def __init__(self, *, cluster_manager: str = "auto",
                 shared: Optional[restarters.SharedCluster] = None,
                 workdir: Optional[Path] = None) -> None:
        from ..deploy.keystone import KeystoneDeployment
        self.deployment = KeystoneDeployment(
            workdir or Path(tempfile.mkdtemp(prefix="nfvha-keystone-")))
        self.lb_port = free_port()         # the catalog's identity endpoint: HAProxy
        # the restarted instance boots Keystone again: seconds on a busy machine
        super().__init__(3, cluster_manager=cluster_manager, shared=shared,
                         argv_for=self.deployment.argv, check_path="/v3",
                         ready_timeout_s=120.0)

    async def start(self) -> None:
        self.started = True
        try:
            await asyncio.to_thread(self.deployment.start, self.lb_port)
        except BaseException:
            await asyncio.to_thread(self.deployment.stop)
            raise
        await super().start()

    async def ready(self, timeout: Optional[float] = None) -> None:
        """Serving, and each instance has issued tokens to as many clients at
        once as the run has: the first ones cost a Keystone 0.5–1.5 s (policy,
        catalog, database connections for each thread) and are no baseline."""
        await super().ready(timeout)
        for port in self.ports.values():
            probes = [self.token_probe(port, 0.01) for _ in range(CLIENTS)]
            for _ in range(3):
                for s in await asyncio.gather(*(p.once() for p in probes)):
                    if not s.ok:
                        raise RuntimeError(f"Keystone on port {port} issued no token: "
                                           f"{s.detail}")
            for p in probes:
                await p.close()

    def token_probe(self, port: int, interval: float) -> HttpProbe:
        # keystoneauth waits for ever by default; a token request on a busy
        # 2-core machine can take seconds: only 10 s without an answer fails
        return HttpProbe("127.0.0.1", port, TOKENS, interval=interval, timeout=10.0,
                         method="POST", body=self.deployment.token_request(),
                         expect=(201,), expect_header="X-Subject-Token", name="http",
                         fail_at_end=True)

    def clients(self, port: int, interval: float) -> ParallelProbe:
        return ParallelProbe([self.token_probe(port, interval) for _ in range(CLIENTS)])

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            await asyncio.to_thread(self.deployment.stop)


def options(name: str, instances: KeystoneInstances,
            phases: Optional[Phases] = None) -> aa.Options:
    checks = name == NAME
    return aa.Options(
        name=name, checks=checks, kill_tree=True, name_servers=True,
        lb_port=instances.lb_port, probe_interval_s=0.01,
        client_probe=instances.clients,
        # a busy Keystone answers GET /v3 late, not never: a generous timeout
        serving_probe=lambda port: HttpProbe("127.0.0.1", port, "/v3", interval=0.01,
                                             timeout=3.0, expect=(200,),
                                             name="http:victim"),
        # observe until HAProxy re-admits the restarted instance (or, without
        # checks, until it serves): Keystone boots in seconds, more when busy
        phases=phases or Phases(baseline_s=2.0, observe_s=30.0, settle_s=0.6))


async def run(name: str, instances: KeystoneInstances, phases: Optional[Phases] = None
              ) -> tuple[Record, Measurement]:
    record, m = await aa.run(options(name, instances, phases), instances)
    record.facts.update({
        "service": "Keystone 30 (PyPI) under gunicorn (1 worker, 4 threads) ×3, one MariaDB "
                   "database, shared fernet keys",
        "client_request": f"POST {TOKENS} (password method, project-scoped) through HAProxy, "
                          f"{CLIENTS} clients back to back, ok = 201 with X-Subject-Token",
        "fault": "kill -9 of the victim's gunicorn master and worker",
        "keystone_setup_s": round(instances.deployment.setup_s or 0.0, 1),
    })
    return record, m


async def run_named(name: str, sal: sal_mod.Sal, model: Model, session: HasKeystone,
                    phases: Optional[Phases] = None) -> ScenarioResult:
    from ..results import NotAvailable, result
    why = available()
    if why is not None:
        raise NotAvailable(f"scenario {name!r} cannot run here: {why}")
    record, m = await run(name, session.keystone(), phases)
    return result(name, "active-active", record, m, sal, model)
