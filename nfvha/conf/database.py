"""[database]: where the controller keeps its store.

Unset, the store is a SQLite file in the state directory an operator looks
in first (``state_dir``), never in whatever directory the command was
started from: a service started from ``/`` or a user's home must not leave
its faults there, nor lose them when started from elsewhere next time.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from oslo_config import cfg

GROUP = "database"
DB_FILE = "nfvha.sqlite"
SYSTEM_STATE_DIR = Path("/var/lib/nfvha")

OPTS = [
    cfg.StrOpt("connection", default=None, secret=True,
               help="SQLAlchemy URL of the controller's store: SQLite for one controller, "
                    "postgresql:// or mysql+pymysql:// when several run side by side. "
                    f"Unset: the SQLite file {DB_FILE} in the state directory, which is "
                    "$STATE_DIRECTORY when systemd sets it (StateDirectory=), "
                    f"{SYSTEM_STATE_DIR} when run as root, else $XDG_STATE_HOME/nfvha "
                    "or ~/.local/state/nfvha; never the current directory. The "
                    "controller logs which store it opened at start."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]


def state_dir(euid: int | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """nfvha's state directory for a process of user ``euid`` (default: this
    process) with environment ``environ`` (default: os.environ)."""
    env = os.environ if environ is None else environ
    uid = os.geteuid() if euid is None else euid
    # systemd's StateDirectory= (several are ':'-separated; ours is the first)
    systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd and os.path.isabs(systemd):
        return Path(systemd)
    if uid == 0:
        return SYSTEM_STATE_DIR
    # XDG Base Directory: a relative $XDG_STATE_HOME is invalid and ignored.
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "nfvha"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "nfvha"


def default_connection(euid: int | None = None,
                       environ: Mapping[str, str] | None = None) -> str:
    """The SQLite URL of the store when none is configured (an absolute path)."""
    path = state_dir(euid, environ) / DB_FILE
    return f"sqlite:///{path}"


def resolve(cli_url: str | None, conf: cfg.ConfigOpts) -> tuple[str, str]:
    """(URL, where it came from): ``--db``, then ``[database] connection``,
    then the default in the state directory, whose directory is made here."""
    if cli_url:
        return cli_url, "--db"
    if conf.database.connection:
        return conf.database.connection, "[database] connection"
    url = default_connection()
    directory = Path(url[len("sqlite:///"):]).parent
    # /var/lib/nfvha also holds guest images QEMU must read: 0755 there,
    # a user's own state stays private.
    try:
        directory.mkdir(mode=0o755 if directory == SYSTEM_STATE_DIR else 0o700, parents=True,
                        exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"nfvha: cannot create the state directory {directory} for the "
                         f"store ({exc.strerror or exc}): set [database] connection or "
                         "--db") from None
    return url, "default: the state directory"


def describe(url: str) -> str:
    """What to log about ``url``: a SQLite file's absolute path, or the URL
    with its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # the store's own error says more when it opens
        return "an unparsable URL"
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            return "SQLite in memory (nothing kept across restarts)"
        return f"SQLite file {os.path.abspath(db)}"
    return parsed.render_as_string(hide_password=True)
