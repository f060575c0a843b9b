from __future__ import annotations

from oslo_config import cfg

GROUP = "api"
OPTS = [
    cfg.HostAddressOpt("listen", default="127.0.0.1", help="Address the REST API listens on."),
    cfg.PortOpt("port", default=8780, help="Port of the REST API (0 = pick a free one)."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
