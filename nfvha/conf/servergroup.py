from __future__ import annotations

from oslo_config import cfg

GROUP = "servergroup"
OPTS = [
    cfg.BoolOpt("enabled", default=True,
                help="Serve server-group messaging: compute agents relay the guests' "
                     "cgcs.messaging channels, the controller routes between members."),
    cfg.StrOpt("socket_pattern", default=r"cgcs\.messaging\.(?P<name>[^/]+)\.sock$",
               help="Regular expression for the messaging sockets in "
                    "[heartbeat] instances_dir; group 'name' is the instance name."),
    cfg.BoolOpt("single_port", default=False,
                help="OPNFV single-port mode: heartbeat and server group share the "
                     "cgcs.heartbeat port through the base layer (set on guests too)."),
    cfg.FloatOpt("rate_per_s", default=20.0, min=0.1,
                 help="Messages a second a guest may send (sustained) on its messaging port."),
    cfg.IntOpt("burst", default=40, min=1, help="Messages a guest may send at once."),
    cfg.StrOpt("groups_file", default=None,
               help="YAML or JSON file of groups for setups without Nova: a list of "
                    "{id, name, members} or a mapping id -> {name, members}."),
    cfg.StrOpt("nova_cloud", default=None,
               help="clouds.yaml entry (or 'envvars') to read Nova server groups and "
                    "placement from with openstacksdk; unset = no Nova."),
    cfg.FloatOpt("nova_sync_s", default=60.0, min=1.0,
                 help="How often groups are re-read from Nova (notifications keep "
                      "placement current in between)."),
    cfg.IntOpt("max_groups", default=1000, min=1,
               help="Server groups the controller holds at most; creating one more "
                    "through the REST API is refused (403)."),
    cfg.IntOpt("max_members", default=100, min=1, max=1000,
               help="Members a server group defined through the REST API may have "
                    "(Nova's own default quota is 10)."),
    cfg.IntOpt("max_name_length", default=255, min=1, max=255,
               help="Longest group id, group name and member name the REST API "
                    "accepts."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
