"""Yardstick HA test cases (tc019 style) as input to the engine.

A Yardstick `ServiceHA` scenario names attackers (`fault_type`:
kill-process, stop-service, ...), monitors (`openstack-cmd` in a loop,
`process` count) and an SLA (`max_outage_time`, `max_recover_time`, in s).
Here each piece maps onto the engine:

  fault_type kill-process / stop-service  → KillProcess (SIGKILL / SIGTERM)
                                            on the instance named by
                                            `process_name` in the deployment
  monitor openstack-cmd                   → HTTP probe through the load balancer
                                            (5 ms, keep-alive: the "command")
  monitor process                         → process presence of the instance (10 ms),
                                            cited in the max_recover_time verdict
  sla max_outage_time                     → outage_ms ≤ limit (an extra verdict)
  sla max_recover_time                    → recovery_ms ≤ limit (an extra verdict;
                                            recovery = back in the LB, stricter than
                                            Yardstick's "process is there again")

nfvha's own keys, under `options.nfvha` (ignored by Yardstick):
`deployment` (active-active | active-active-nocheck | pod) and `victim`
(instance number). With no OpenStack here the default deployment is nfvha's
own active/active HAProxy setup.

`deployment: pod` runs the case against the nodes of a Yardstick pod file,
as Yardstick did (`scenarios/pod_service.py`): the pod file is
`context.file` (relative to the task file) or `options.nfvha.pod_file`;
the attacker's `host` (through the scenario's `nodes:` map, `node1:
node1.LF` → pod node `node1`) is the victim node, reached over ssh (or
`netns:`/`local:` nodes); `process_name` is the `pgrep -f` pattern there;
`options.nfvha.service: {port, host (default: the node's ip),
client_netns}` is where clients reach the service. Faults there:
kill-process, and nfvha's `drop-port` (nftables drops the service port on
the node for `options.nfvha.drop_s`, default 0.5 s). Only the SLA verdicts
apply (no requirement of the model is about a bare pod service).

Yardstick's own HA cases (nfvha/verify/data/yardstick/, the published
tc045–tc049, tc053, tc056, tc057 with their Jinja defaults filled in):
`read()` takes any of them — ServiceHA or GeneralHA, attackers (also
`general-attacker` with `attack_key` and `action_parameter`), monitors with
their `key`, `command_name`, `monitor_time`, `monitor_number` and `sla`,
GeneralHA's `operations`, `resultCheckers` and `steps` — and `where()` says
what runs it here or, plainly, why nothing can: the attacked process
decides (haproxy → `load-balancer`, rabbitmq-server → `broker`, nova-api →
nfvha's active/active stand-in, corosync → `cluster-manager`, keystone →
`keystone`, real Keystone behind HAProxy; neutron-server, glance-api,
cinder-api and swift-proxy have no deployment here). An
`options.nfvha.deployment` still chooses the deployment explicitly. Their
`openstack-cmd` monitors are not run (no OpenStack CLI and cloud here): the
scenario's own client probe stands for them — for tc046 a real Keystone
token request through HAProxy — and each monitor's SLA is judged against it.
`python -m nfvha.verify.yardstick FILE...` prints that table.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

from . import sal as sal_mod
from .model import Model
from .verdicts import Verdict

SUPPORTED_FAULTS = {"kill-process": signal.SIGKILL, "stop-service": signal.SIGTERM}
POD_FAULTS = ("kill-process", "drop-port")
MIDDLEWARE = ("load-balancer", "load-balancer-notrack", "broker", "broker-classic",
              "cluster-manager", "cluster-manager-nofence")
KEYSTONE = ("keystone", "keystone-nohealth")

# The attacked process decides what runs a published case here.
DEFAULT_DEPLOYMENT = {"nova-api": "active-active", "haproxy": "load-balancer",
                      "rabbitmq-server": "broker", "corosync": "cluster-manager",
                      "keystone": "keystone"}
RUNS_AS = {
    "nova-api": "nfvha's active/active stand-in: HAProxy + 3 HTTP instances play nova-api",
    "haproxy": "scenario load-balancer: HAProxy on the VRRP master of two namespaces killed",
    "rabbitmq-server": "scenario broker: one node of a three-node RabbitMQ cluster killed",
    "corosync": "scenario cluster-manager: corosync killed on one of three Corosync/Pacemaker "
                "nodes in namespaces, with fencing; the case's get-vip-host operations and "
                "pacemaker-resource-checker checks read a Fuel deployment's resources "
                "(vip__management, p_rabbitmq-server, p_conntrackd) and are not run",
    "keystone": "scenario keystone: three real Keystone instances (PyPI, one MariaDB "
                "database) behind HAProxy with health checks, one killed; a token request "
                "through HAProxy stands for the 'openstack user list' monitor",
}
NOT_HERE = {
    "neutron-server": "neutron-server is not installed here (no OpenStack networking "
                      "service on this machine)",
    "glance-api": "glance-api is not installed here (no OpenStack image service)",
    "cinder-api": "cinder-api is not installed here (no OpenStack block storage service)",
    "swift-proxy": "swift-proxy is not installed here (no OpenStack object storage)",
}


def _process_of(attacker: Dict[str, Any]) -> str:
    """ServiceHA's `process_name`, or GeneralHA's `action_parameter.process_name`."""
    proc = attacker.get("process_name") or \
        (attacker.get("action_parameter") or {}).get("process_name") or ""
    return str(proc)


@dataclass
class Monitor:
    type: str
    key: str = ""
    command: str = ""
    process: str = ""
    host: str = ""
    time_s: Optional[float] = None
    number: Optional[int] = None
    sla: Dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        what = self.command or self.process
        sla = ", ".join(f"{k} {v:g} s" for k, v in self.sla.items())
        return f"{self.type} {what!r}" + (f" (SLA {sla})" if sla else "")


@dataclass
class YardstickCase:
    """A published Yardstick HA case as it is written (any ServiceHA/GeneralHA)."""
    name: str
    type: str
    description: str
    fault_type: str
    attack_key: str
    process: str
    host: str
    monitors: List[Monitor]
    operations: List[str]
    checkers: List[str]
    steps: List[str]
    sla: Dict[str, Any]
    deployment: Optional[str]          # options.nfvha.deployment, if any


def read(text: str, name: str = "yardstick") -> YardstickCase:
    """Reads any Yardstick HA case, runnable here or not; ValueError if it is none."""
    try:
        d = yaml.safe_load(text)
        sc = d["scenarios"][0]
        opts = sc.get("options") or {}
        att = (opts.get("attackers") or [{}])[0]
        mons = []
        for m in opts.get("monitors") or []:
            sla = {k: float(v) for k, v in (m.get("sla") or {}).items()}
            mons.append(Monitor(str(m.get("monitor_type", "")), str(m.get("key", "")),
                                str(m.get("command_name", "")), str(m.get("process_name", "")),
                                str(m.get("host", "")), m.get("monitor_time"),
                                m.get("monitor_number"), sla))
        steps = [f"{st.get('index')}: {st.get('actionType')} {st.get('actionKey')}"
                 for st in opts.get("steps") or []]
        return YardstickCase(
            name=name, type=str(sc.get("type")), description=" ".join(
                str(d.get("description", "")).split()),
            fault_type=str(att.get("fault_type", "")), attack_key=str(att.get("attack_key", "")),
            process=_process_of(att), host=str(att.get("host", "")), monitors=mons,
            operations=[f"{o.get('key')} ({o.get('operation_key')})"
                        for o in opts.get("operations") or []],
            checkers=[f"{c.get('key')} ({c.get('checker_key')}: "
                      f"{(c.get('parameter') or {}).get('resource_name')} "
                      f"{c.get('condition')} {c.get('expectedValue')})"
                      for c in opts.get("resultCheckers") or []],
            steps=steps, sla=dict(sc.get("sla") or {}),
            deployment=(opts.get("nfvha") or {}).get("deployment"))
    except (yaml.YAMLError, TypeError, AttributeError, KeyError, IndexError,
            ValueError) as exc:
        raise ValueError(f"not a Yardstick HA case: {type(exc).__name__}: {exc}") from exc


def where(c: YardstickCase) -> tuple:
    """(deployment that runs the case here, how) or (None, why it cannot run here)."""
    if c.deployment:
        return c.deployment, "options.nfvha.deployment"
    if c.process in DEFAULT_DEPLOYMENT:
        return DEFAULT_DEPLOYMENT[c.process], RUNS_AS[c.process]
    return None, NOT_HERE.get(c.process, f"nothing here plays {c.process!r}")


def table(cases: List[YardstickCase]) -> str:
    """What each case asks for and what nfvha does with it here."""
    out = []
    for c in cases:
        dep, how = where(c)
        out.append(f"{c.name}: {c.type}, {c.fault_type}"
                   + (f" ({c.attack_key})" if c.attack_key else "")
                   + f" of {c.process!r} on {c.host}")
        for m in c.monitors:
            stand_in = ""
            if m.type == "openstack-cmd" and dep is not None:
                stand_in = "  -> not run (no OpenStack cloud or CLI here): the scenario's " \
                           "client probe stands for it"
            sic = "" if m.type in ("openstack-cmd", "process") or not m.process else \
                " (sic: the file names the process as its monitor_type; a process monitor)"
            out.append(f"    monitor {m.describe()}{sic}{stand_in}")
        for o in c.operations:
            out.append(f"    operation {o}  -> not run here")
        for k in c.checkers:
            out.append(f"    result checker {k}  -> not run here")
        out.append(f"    runs here as: {dep} ({how})" if dep else f"    cannot run here: {how}")
    return "\n".join(out)


@dataclass
class Case:
    name: str
    deployment: str
    victim: int
    fault_type: str
    process_name: str
    monitors: List[Dict[str, Any]] = field(default_factory=list)
    max_outage_ms: Optional[float] = None
    max_recover_ms: Optional[float] = None
    host: Optional[str] = None             # the attacker's pod node (deployment: pod)
    pod_file: Optional[str] = None
    service: Dict[str, Any] = field(default_factory=dict)
    drop_s: float = 0.5


def parse(text: str, name: str = "yardstick") -> Case:
    """A Case from a task file's text; any malformed input is a ValueError."""
    try:
        return _parse(text, name)
    except ValueError:
        raise
    except (yaml.YAMLError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ValueError(f"malformed Yardstick task: {type(exc).__name__}: {exc}") from exc


def _parse(text: str, name: str) -> Case:
    d = yaml.safe_load(text)
    if not isinstance(d, dict) or not d.get("scenarios"):
        raise ValueError("not a Yardstick task: no 'scenarios'")
    sc = d["scenarios"][0]
    if sc.get("type") not in ("ServiceHA", "GeneralHA"):
        raise ValueError("only ServiceHA and GeneralHA scenarios are supported, not "
                         f"{sc.get('type')!r}")
    opts = sc.get("options", {})
    attackers = opts.get("attackers") or []
    if len(attackers) != 1:
        raise ValueError("exactly one attacker is supported")
    fault = attackers[0].get("fault_type")
    ext = opts.get("nfvha") or {}
    proc = _process_of(attackers[0])
    deployment = ext.get("deployment") or DEFAULT_DEPLOYMENT.get(proc, "active-active")
    allowed = POD_FAULTS if deployment == "pod" else (
        ("general-attacker", "kill-process") if deployment.startswith("cluster-manager") else
        ("kill-process",) if deployment in MIDDLEWARE + KEYSTONE else tuple(SUPPORTED_FAULTS))
    if fault not in allowed:
        raise ValueError(f"fault_type {fault!r} not supported here; one of "
                         f"{', '.join(allowed)}")
    out_ms = rec_ms = None
    monitors = list(opts.get("monitors") or [])
    for mon in monitors:
        s = mon.get("sla") or {}
        if "max_outage_time" in s:
            out_ms = 1000.0 * float(s["max_outage_time"])
        if "max_recover_time" in s:
            rec_ms = 1000.0 * float(s["max_recover_time"])
    top = sc.get("sla") or {}
    if out_ms is None and "outage_time" in top:
        out_ms = 1000.0 * float(top["outage_time"])
    case = Case(name=name, deployment=deployment,
                victim=int(ext.get("victim", 2)), fault_type=fault,
                process_name=proc, monitors=monitors,
                max_outage_ms=out_ms, max_recover_ms=rec_ms)
    if deployment == "pod":
        host = attackers[0].get("host")
        if not host:
            raise ValueError("deployment pod: the attacker needs a 'host'")
        mapped = (sc.get("nodes") or {}).get(host, host)
        case.host = str(mapped).split(".", 1)[0]           # node1.LF → node1
        case.pod_file = ext.get("pod_file") or (d.get("context") or {}).get("file")
        if not case.pod_file:
            raise ValueError("deployment pod: no pod file (context.file)")
        case.service = dict(ext.get("service") or {})
        if not isinstance(case.service.get("port"), int):
            raise ValueError("deployment pod: options.nfvha.service.port (int) is required")
        if not case.process_name:
            raise ValueError("deployment pod: the attacker needs a 'process_name'")
        case.drop_s = float(ext.get("drop_s", 0.5))
    return case


def sla_verdicts(case: Case, outage_ms: float, recovery_ms: Optional[float],
                 process_back_ms: Optional[float] = None) -> List[Verdict]:
    """max_outage_time → the client outage; max_recover_time → recovery (fault →
    the instance back in service), stricter than Yardstick's process count."""
    out = []
    if case.max_outage_ms is not None:
        ok = outage_ms <= case.max_outage_ms
        out.append(Verdict("SLA max_outage_time", "pass" if ok else "fail",
                           f"outage {outage_ms:.0f} ms vs Yardstick SLA "
                           f"{case.max_outage_ms:.0f} ms"))
    if case.max_recover_ms is not None:
        ok = recovery_ms is not None and recovery_ms <= case.max_recover_ms
        proc = "" if process_back_ms is None else \
            f" (process running again at {process_back_ms:.0f} ms)"
        out.append(Verdict("SLA max_recover_time", "pass" if ok else "fail",
                           f"recovery {'n/a' if recovery_ms is None else f'{recovery_ms:.0f}'} "
                           f"ms{proc} vs Yardstick SLA {case.max_recover_ms:.0f} ms"))
    return out


async def run_case(path: str, target: sal_mod.Sal, model: Model, instances=None,
                   session=None):
    from .results import NotAvailable, result
    from .scenarios import active_active as aa
    with open(path) as f:
        text = f.read()
    name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    dep, why = where(read(text, name))
    if dep is None:
        raise NotAvailable(f"Yardstick case {name} cannot run here: {why}")
    case = parse(text, name=name)
    if case.deployment in MIDDLEWARE + KEYSTONE:
        return await _run_middleware_case(case, target, model, session)
    if case.deployment == "pod":
        return await _run_pod_case(case, os.path.dirname(os.path.abspath(path)), target)
    if case.deployment not in ("active-active", "active-active-nocheck"):
        raise ValueError(f"deployment {case.deployment!r} not available for Yardstick cases")
    opts = aa.Options(checks=case.deployment == "active-active", victim=case.victim,
                      kill_signal=SUPPORTED_FAULTS[case.fault_type])
    record, m = await aa.run(opts, instances)
    record.facts["yardstick"] = {"fault_type": case.fault_type,
                                 "process_name": case.process_name,
                                 "monitors": [x.get("monitor_type") for x in case.monitors]}
    res = result(case.name, "active-active", record, m, target, model)
    back = record.first("process_back", after=record.fault_at or 0.0)
    back_ms = None if back is None or record.fault_at is None else \
        1000.0 * (back.t - record.fault_at)
    res.extra_verdicts = sla_verdicts(case, m.outage_ms, m.recovery_ms, back_ms)
    return res


async def _run_pod_case(case: Case, base_dir: str, target: sal_mod.Sal):
    from .nodes import from_pod
    from .results import ScenarioResult
    from .scenarios import pod_service
    pod_path = os.path.join(base_dir, case.pod_file or "")
    try:
        with open(pod_path) as f:
            pod = yaml.safe_load(f)
        nodes = from_pod(pod)
    except (OSError, yaml.YAMLError, TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"pod file {pod_path}: {type(exc).__name__}: {exc}") from exc
    if case.host not in nodes:
        raise ValueError(f"pod file {pod_path} has no node {case.host!r}")
    node = nodes[case.host]
    ip = next((n.get("ip") for n in pod["nodes"] if n.get("name") == case.host), None)
    host = case.service.get("host") or ip
    if not host:
        raise ValueError(f"no address for the service on {case.host!r} (service.host)")
    svc = pod_service.PodService(node, case.process_name, host, int(case.service["port"]),
                                 client_netns=case.service.get("client_netns"))
    try:
        record, m = await pod_service.run(svc, case.fault_type, drop_s=case.drop_s)
    finally:
        await node.close()
    record.facts["yardstick"] = {"fault_type": case.fault_type, "host": case.host,
                                 "process_name": case.process_name,
                                 "monitors": [x.get("monitor_type") for x in case.monitors]}
    return ScenarioResult(case.name, record, m, [],
                          sal_mod.reached(m.detection_ms, m.recovery_ms),
                          sla_verdicts(case, m.outage_ms, m.recovery_ms))


async def _run_middleware_case(case: Case, target: sal_mod.Sal, model: Model, session):
    """tc046 / tc053 / tc056 / tc057: the scenario that plays the attacked
    process (Keystone, the HA middleware), Yardstick's SLA beside our verdicts."""
    if session is None:
        raise ValueError(f"{case.name}: the {case.deployment} scenario needs a session")
    if case.deployment in KEYSTONE:
        from .scenarios import keystone
        res = await keystone.run_named(case.deployment, target, model, session)
    else:
        from .scenarios import middleware
        res = await middleware.run(case.deployment, target, model, session)
    res.name = case.name
    r = res.record
    r.facts["yardstick"] = {
        "fault_type": case.fault_type, "process_name": case.process_name,
        "monitors": [x.get("monitor_type") for x in case.monitors],
        "openstack_cmd": [x.get("command_name") for x in case.monitors
                          if x.get("monitor_type") == "openstack-cmd"],
        "stand_in": (f"scenario {case.deployment}: a token request (POST /v3/auth/tokens) "
                     "through HAProxy stands for the openstack-cmd monitors"
                     if case.deployment in KEYSTONE else
                     f"scenario {case.deployment}: its client probe stands for the "
                     "openstack-cmd monitors (no OpenStack here)")}
    # Yardstick's process monitor counts the process running again: the restart
    back = r.first("instance_restarted", after=r.fault_at or 0.0)
    back_ms = None if back is None or r.fault_at is None else 1000.0 * (back.t - r.fault_at)
    res.extra_verdicts = sla_verdicts(case, res.measurement.outage_ms,
                                      res.measurement.recovery_ms, back_ms)
    return res


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m nfvha.verify.yardstick",
                                 description="what each Yardstick HA case asks for and what "
                                 "nfvha runs for it here")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    cases = []
    for path in a.files:
        with open(path) as f:
            cases.append(read(f.read(), os.path.basename(path).rsplit(".", 1)[0]))
    print(table(cases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
