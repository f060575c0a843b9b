from __future__ import annotations

from oslo_config import cfg

GROUP = "database"
OPTS = [
    cfg.StrOpt("connection", default="sqlite:///nfvha.sqlite", secret=True,
               help="SQLAlchemy URL of the controller's store: SQLite for one controller, "
                    "postgresql:// or mysql+pymysql:// when several run side by side."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
