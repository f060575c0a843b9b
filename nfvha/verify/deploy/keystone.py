"""Keystone from PyPI, three instances on one database, for the tc046 scenario.

scripts/install-openstack.sh installs Keystone (and gunicorn, PyMySQL) into
its own virtualenv (its oslo.* pins differ from nfvha's): NFVHA_OPENSTACK_VENV,
else /opt/nfvha-openstack/venv as root, else ~/.cache/nfvha-openstack/venv.

`KeystoneDeployment(workdir)`:
- one database `nfvha_verify_ks_<pid>_<n>` on the machine's MariaDB
  (root, no password, 127.0.0.1:3306 — the one the tests use), made
  with `keystone-manage db_sync` and `bootstrap` (admin / a random password,
  project admin, RegionOne, its own identity endpoints), dropped at `stop()`;
- one keystone.conf and one fernet key repository (key 0 staged, key 1
  primary, as `keystone-manage fernet_setup` leaves it) read by every
  instance, so a token any instance issues is valid at all of them;
- bcrypt at 4 rounds (its minimum): Keystone's default 12 costs ~0.25 s of
  CPU per password check, which would make the token request itself the
  load on 2 cores; the password is still checked, just cheaper;
- `argv(name, port)`: one instance = gunicorn (one worker, 4 threads) on
  127.0.0.1:port serving `keystone.wsgi.api`; an instance is the gunicorn
  master *and* its worker, killed together (Yardstick's kill-process kills
  every keystone process on the node).

Nothing of the machine's own is touched but that one database on MariaDB.
"""
from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

MARIADB = ("127.0.0.1", 3306)
DB_URL = "mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8"
# oslo.config parses sys.argv in keystone's WSGI module: hand it the
# service's own argv, not gunicorn's, and name the config file.
WSGI_SHIM = ("import os, sys\nos.environ['OS_KEYSTONE_CONFIG_FILES'] = {conf!r}\n"
             "sys.argv = ['keystone']\nfrom keystone.wsgi.api import application  # noqa\n")
_serial = itertools.count(1)


def venv() -> Path:
    """Where scripts/install-openstack.sh puts Keystone (whether or not it is there)."""
    env = os.environ.get("NFVHA_OPENSTACK_VENV")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/opt/nfvha-openstack/venv")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "nfvha-openstack" / "venv"


def available() -> Optional[str]:
    """None if the Keystone deployment can run here, else why not."""
    v = venv()
    for tool in ("keystone-manage", "gunicorn", "python"):
        if not (v / "bin" / tool).exists():
            return (f"Keystone is not installed ({v / 'bin' / tool} missing): run "
                    "scripts/install-openstack.sh")
    try:
        with socket.create_connection(MARIADB, timeout=1):
            pass
    except OSError as exc:
        return f"MariaDB is not reachable at {MARIADB[0]}:{MARIADB[1]} ({exc})"
    return None


def _fernet_repo(repo: Path) -> None:
    """Key 0 staged, key 1 primary: `keystone-manage fernet_setup`'s layout
    (a fernet key is 32 random bytes, url-safe base64)."""
    import base64
    repo.mkdir(mode=0o700)
    for n in (0, 1):
        (repo / str(n)).write_bytes(base64.urlsafe_b64encode(os.urandom(32)))
        (repo / str(n)).chmod(0o600)


class KeystoneDeployment:
    """The shared part of three Keystone instances: database, config, keys."""

    def __init__(self, workdir: Path, venv_dir: Optional[Path] = None) -> None:
        self.workdir = Path(workdir)
        self.venv = venv_dir or venv()
        self.db = f"nfvha_verify_ks_{os.getpid()}_{next(_serial)}"
        self.conf = self.workdir / "keystone.conf"
        self.admin_password = secrets.token_urlsafe(12)
        self.setup_s: Optional[float] = None
        self._db_made = False

    def _python(self, code: str, *args: str) -> None:
        """PyMySQL lives in Keystone's venv, not nfvha's: SQL goes through it."""
        out = subprocess.run([str(self.venv / "bin" / "python"), "-c", code, *args],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"MariaDB: {out.stderr.strip()[-400:]}")

    def _sql(self, *statements: str) -> None:
        self._python("import sys, pymysql\n"
                     "c = pymysql.connect(host='127.0.0.1', port=3306, user='root', "
                     "connect_timeout=5)\n"
                     "cur = c.cursor()\n"
                     "for s in sys.argv[1:]:\n    cur.execute(s)\n"
                     "c.commit(); c.close()\n", *statements)

    def _manage(self, *args: str, what: str) -> None:
        out = subprocess.run([str(self.venv / "bin" / "keystone-manage"), "--config-file",
                              str(self.conf), *args], capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed ({out.returncode}): {out.stderr.strip()[-600:]}")

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/v3"

    def start(self, public_port: int) -> None:
        """Database, keys, config; db_sync and bootstrap (the catalog's identity
        endpoint is the load balancer's `public_port`)."""
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._sql(f"DROP DATABASE IF EXISTS `{self.db}`",
                  f"CREATE DATABASE `{self.db}` CHARACTER SET utf8mb4")
        self._db_made = True
        for repo in ("fernet", "receipts"):
            _fernet_repo(self.workdir / repo)
        self.conf.write_text(
            f"[DEFAULT]\nlog_file = {self.workdir / 'keystone.log'}\n"
            f"[database]\nconnection = {DB_URL.format(name=self.db)}\n"
            f"[fernet_tokens]\nkey_repository = {self.workdir / 'fernet'}\n"
            f"[fernet_receipts]\nkey_repository = {self.workdir / 'receipts'}\n"
            "[identity]\npassword_hash_rounds = 4\n")
        self._manage("db_sync", what="keystone-manage db_sync")
        url = self.url(public_port)
        self._manage("bootstrap", "--bootstrap-password", self.admin_password,
                     "--bootstrap-admin-url", url, "--bootstrap-public-url", url,
                     "--bootstrap-internal-url", url, "--bootstrap-region-id", "RegionOne",
                     what="keystone-manage bootstrap")
        self.setup_s = time.monotonic() - t0

    def argv(self, name: str, port: int) -> List[str]:
        """One instance: gunicorn serving keystone.wsgi.api on 127.0.0.1:port."""
        shim = self.workdir / f"keystone_{name}_wsgi.py"
        shim.write_text(WSGI_SHIM.format(conf=str(self.conf)))
        return [str(self.venv / "bin" / "gunicorn"), "--chdir", str(self.workdir),
                "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
                "--timeout", "120", "--graceful-timeout", "2", "--no-control-socket",
                # its log and Keystone's warnings in a file, not on our terminal
                "--error-logfile", str(self.workdir / f"gunicorn-{name}.log"),
                "--capture-output", f"{shim.stem}:application"]

    def token_request(self) -> bytes:
        """The body of a password-method, project-scoped token request as admin."""
        import json
        return json.dumps({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"},
                "password": self.admin_password}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}).encode()

    def stop(self) -> None:
        if self._db_made:
            try:
                self._sql(f"DROP DATABASE IF EXISTS `{self.db}`")
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                pass        # MariaDB gone: nothing left to drop
            self._db_made = False
        shutil.rmtree(self.workdir, ignore_errors=True)
