"""[recovery]: whether and how nfvha itself recovers a failed guest
(docs/dev/contracts.md, "Recovery (issue 8)")."""
from __future__ import annotations

from oslo_config import cfg

GROUP = "recovery"
OPTS = [
    cfg.StrOpt("mode", default="none", choices=[
        ("none", "nfvha reports faults only; nothing acts on the VM"),
        ("libvirt", "the compute agent resets (reboot) or destroys (stop) the domain "
                    "through its libvirtd"),
        ("nova", "the controller asks Nova for a hard reboot or a stop (openstacksdk, "
                 "as nfvha's service user; see nova_cloud)"),
        ("masakari", "Masakari recovers the VM: the masakari sink must be enabled in "
                     "[reporters] enabled; nfvha never acts itself"),
    ], help="Who carries out the guest's corrective action (reboot, stop). libvirt and "
            "nova add the 'recovery' sink, with loop protection (max_actions in "
            "window_s, min_uptime_s); they refuse to start with the masakari sink "
            "enabled (two systems would act on one VM)."),
    cfg.IntOpt("max_actions", default=3, min=1,
               help="Actions on one instance within window_s; the fault after that marks "
                    "its recovery exhausted (a recovery_exhausted event is reported) until "
                    "an operator re-arms it (nfvha recovery rearm UUID)."),
    cfg.FloatOpt("window_s", default=3600.0, min=1.0,
                 help="The window max_actions counts in."),
    cfg.FloatOpt("min_uptime_s", default=120.0, min=0.0,
                 help="No action sooner than this after the last one on the same instance: "
                      "the action waits, and is skipped if the guest heartbeats again "
                      "meanwhile."),
    cfg.FloatOpt("notice_timeout_s", default=10.0, min=0.0,
                 help="A guest that still answers (unhealthy) is told of the action first "
                      "(an irrevocable notice) and given at most this long to prepare."),
    cfg.FloatOpt("recovered_timeout_s", default=600.0, min=1.0,
                 help="An action after which the guest does not heartbeat again within "
                      "this long is marked failed."),
    cfg.StrOpt("nova_cloud", default="envvars",
               help="mode = nova: clouds.yaml entry (or 'envvars' for OS_* variables) of "
                    "nfvha's service user, used by openstacksdk."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
