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
    if sc.get("type") != "ServiceHA":
        raise ValueError(f"only ServiceHA scenarios are supported, not {sc.get('type')!r}")
    opts = sc.get("options", {})
    attackers = opts.get("attackers") or []
    if len(attackers) != 1:
        raise ValueError("exactly one attacker is supported")
    fault = attackers[0].get("fault_type")
    ext = opts.get("nfvha") or {}
    deployment = ext.get("deployment", "active-active")
    allowed = POD_FAULTS if deployment == "pod" else tuple(SUPPORTED_FAULTS)
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
                process_name=attackers[0].get("process_name", ""), monitors=monitors,
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


async def run_case(path: str, target: sal_mod.Sal, model: Model, instances=None):
    from .runner import result
    from .scenarios import active_active as aa
    with open(path) as f:
        case = parse(f.read(), name=path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
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
    from .runner import ScenarioResult
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
