"""[hosts]: telling a dead compute host from a dead compute agent
(nfvha/controller/hostfailure.py).

A silent agent alone is never a VM fault. With a second signal configured
(a management address to probe, or Nova's service list), a host whose
agent is silent AND whose second signal says down has every VM on it
reported as a ``host_down`` fault.
"""
from __future__ import annotations

from oslo_config import cfg

GROUP = "hosts"
OPTS = [
    cfg.BoolOpt("report_host_down", default=True,
                help="Report every VM of a compute host found down as a host_down fault "
                     "(sinks, recovery). It only ever happens where a second signal is "
                     "configured (probe_port with a management address, or nova_cloud): "
                     "an agent's silence alone never counts. false: a host found down is "
                     "logged and shown in GET /v1/hosts only."),
    cfg.DictOpt("management_addresses", default={},
                help="host:address pairs: the address on which the controller probes "
                     "each compute host (its management network). Wins over what the "
                     "agent reports and over management_address_pattern."),
    cfg.StrOpt("management_address_pattern", default="",
               help="The management address of a host not listed in management_addresses "
                    "nor reported by its agent, made from its name: e.g. '{host}-mgmt' "
                    "(a name DNS resolves). Empty: none."),
    cfg.BoolOpt("use_reported_address", default=True,
                help="Probe the address the compute agent reports in its alive fanout "
                     "([compute] management_address) when management_addresses does not "
                     "list the host."),
    cfg.PortOpt("probe_port", default=22,
                help="TCP port probed on the management address (sshd's, say). The host "
                     "is up if it accepts or refuses (a refusal comes from a running "
                     "kernel); down only if no connect gets an answer. 0: no probe."),
    cfg.IntOpt("probe_count", default=3, min=1, max=20,
               help="Connects per check: the host is down only if none is answered."),
    cfg.FloatOpt("probe_interval_s", default=0.2, min=0.0,
                 help="The connects of one check start this far apart (they overlap: "
                      "a gone host is known after (probe_count - 1) x probe_interval_s "
                      "+ probe_timeout_s)."),
    cfg.FloatOpt("probe_timeout_s", default=1.0, min=0.01,
                 help="How long one connect waits for an answer."),
    cfg.FloatOpt("recheck_interval_s", default=5.0, min=0.1,
                 help="A host whose agent stays silent while the host answers (or the "
                      "signals cannot tell) is checked again this often: the host may die "
                      "after its agent."),
    cfg.StrOpt("nova_cloud", default="",
               help="clouds.yaml entry ('envvars': the OS_* environment) through which "
                    "the controller asks Nova for the host's nova-compute service state "
                    "(a second signal: down or forced down). Empty: not asked. Nova "
                    "marks a service down only after its service_down_time (60 s)."),
    cfg.BoolOpt("nova_force_down", default=False,
                help="With nova_cloud: once a host is found down, mark its nova-compute "
                     "service forced down in Nova (as OPNFV Doctor does), so Nova "
                     "evacuates from it at once ([recovery] mode = nova) instead of after "
                     "its service_down_time, and schedules nothing onto it. The same "
                     "caution as masakari_host_status: nfvha does not power the host "
                     "off. An operator clears it (openstack compute service set --up)."),
    cfg.StrOpt("masakari_host_status", default="NORMAL", choices=[
        ("NORMAL", "Masakari's host-failure flow evacuates the host's instances"),
        ("UNKNOWN", "Masakari records the notification and does nothing (as for a host "
                    "its own monitor could not confirm off)"),
    ], help="host_status of the COMPUTE_HOST notification the masakari sink sends for a "
            "host found down. nfvha does not power the host off: if a host's management "
            "network can fail while the host keeps running its VMs (their disks on "
            "shared storage), fence it first or choose UNKNOWN."),
    cfg.FloatOpt("max_down_fraction", default=0.5, min=0.0, max=1.0,
                 help="With 3 or more hosts known, never declare more than this fraction "
                      "of them down at once: a controller cut from the bus and the "
                      "management network would otherwise evacuate the whole cloud. "
                      "Held hosts are checked again every recheck_interval_s."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
