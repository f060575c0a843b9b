"""Real Keystone and Masakari (PyPI) for the tests, as child processes.

scripts/install-openstack.sh puts them in their own virtualenv (their
oslo.* pins differ from nfvha's). Each service gets a database of its own
on the machine's MariaDB (root, no password, 127.0.0.1:3306), named after
this process so that two sessions never share one, dropped at the end.

Keystone: ``keystone-manage db_sync`` and ``bootstrap`` (admin/admin
project, RegionOne, its own endpoints), fernet key repositories as
``fernet_setup`` leaves them, served by gunicorn.
Masakari: ``masakari-manage db sync``; masakari-api under gunicorn with
keystonemiddleware against that Keystone; masakari-engine over the local
RabbitMQ (a topic of this session's own), reaching Nova through the
catalog entry "compute"/"nova", which points at NOVA_PATH on a port the
tests serve the Nova stand-in on (``Keystone.nova_port``).
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx

LOG = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "scripts" / "install-openstack.sh"
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root"}
DB_URL = "mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8"
NOVA_PATH = "/v2.1"
# A WSGI entry point that gives oslo.config the service's own arguments
# instead of gunicorn's: both services' WSGI modules parse sys.argv, and
# Masakari's parses it again with no config file but what argv names.
WSGI_SHIM = "import sys\nsys.argv = {argv!r}\nfrom {module} import application  # noqa\n"


class Unavailable(Exception):
    """The services cannot run on this machine (the reason says why)."""


def install() -> Path:
    """The venv holding keystone and masakari (installed on first use)."""
    try:
        out = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True,
                             timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{INSTALLER.name} did not finish in 15 min") from exc
    if out.returncode != 0:
        raise Unavailable(f"{INSTALLER.name} failed: {out.stderr.strip()[-600:]}")
    venv = Path(out.stdout.strip().splitlines()[-1])
    if not (venv / "bin" / "keystone-manage").exists():
        raise Unavailable(f"{INSTALLER.name} left no keystone-manage in {venv}")
    return venv


def _sql(*statements: str) -> None:
    import pymysql

    try:
        conn = pymysql.connect(**MARIADB, connect_timeout=5)
    except pymysql.err.OperationalError as exc:
        raise Unavailable(f"MariaDB is not reachable as root at 127.0.0.1:3306: {exc}") from exc
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
        conn.commit()
    finally:
        conn.close()


def fresh_database(name: str) -> str:
    _sql(f"DROP DATABASE IF EXISTS `{name}`",
         f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return DB_URL.format(name=name)


def drop_database(name: str) -> None:
    try:
        _sql(f"DROP DATABASE IF EXISTS `{name}`")
    except Exception:  # noqa: BLE001 - teardown: MariaDB gone is no test failure
        pass


def _run(cmd: list[str], what: str, env: Optional[dict[str, str]] = None,
         timeout: float = 300) -> None:
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    LOG.info("%s: %.1f s", what, time.monotonic() - t0)
    if out.returncode != 0:
        raise Unavailable(f"{what} failed ({out.returncode}): {out.stderr.strip()[-800:]}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """One child process (its own process group) and its log."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Optional[Path] = None
    proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=out, cwd=self.cwd,
                                     env={**os.environ, **self.env},
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()

    def stop(self, grace: float = 10) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise Unavailable(f"{self.name} exited: {self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise Unavailable(f"{self.name} did not answer at {url} in {timeout:.0f} s: "
                          f"{self.tail()}")


def _gunicorn(venv: Path, workdir: Path, name: str, module: str, port: int,
              env: dict[str, str], threads: int = 1, args: tuple[str, ...] = ()) -> Service:
    shim = workdir / f"{name.replace('-', '_')}_wsgi.py"
    shim.write_text(WSGI_SHIM.format(module=module, argv=[name, *args]))
    return Service(name, [str(venv / "bin" / "gunicorn"), "--chdir", str(workdir),
                          # one worker: each boots the whole service (seconds of CPU)
                          "--bind", f"127.0.0.1:{port}", "--workers", "1",
                          "--threads", str(threads),
                          "--timeout", "120", "--graceful-timeout", "5",
                          "--no-control-socket", f"{shim.stem}:application"],
                   workdir / f"{name}.log", env=env)


@dataclass
class Keystone:
    venv: Path
    workdir: Path
    db: str
    port: int
    admin_password: str
    nova_port: int          # the catalog's "compute" endpoint: the tests serve
    server: Optional[Service] = None  # the Nova stand-in there (NovaStandin.start(port=...))
    _admin: Any = None

    @property
    def nova_url(self) -> str:
        return f"http://127.0.0.1:{self.nova_port}{NOVA_PATH}"

    @property
    def url(self) -> str:
        """The Identity endpoint a client's auth_url names."""
        return f"http://127.0.0.1:{self.port}/v3"

    def start(self) -> None:
        """(Re)start the WSGI server: same port, same database, same keys."""
        self.server = _gunicorn(self.venv, self.workdir, "keystone", "keystone.wsgi.api",
                                self.port, {"OS_KEYSTONE_CONFIG_FILES":
                                            str(self.workdir / "keystone.conf")}, threads=4)
        self.server.start()
        self.server.wait_http(self.url)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.server is not None:
            self.server.stop()

    def admin(self) -> Any:
        """An openstacksdk Connection as the bootstrap admin (a new one: the
        caller closes it)."""
        from nfvha.controller.reporters._openstack import connect

        return connect(auth_url=self.url, username="admin", password=self.admin_password,
                       project_name="admin", user_domain_name="Default",
                       project_domain_name="Default", region_name="RegionOne")

    def _setup_conn(self) -> Any:
        """One admin connection for the set-up calls (a login costs a
        Keystone round of its own)."""
        if self._admin is None:
            self._admin = self.admin()
        return self._admin

    def add_user(self, name: str, password: str, roles: list[str],
                 project: str = "service") -> None:
        conn = self._setup_conn()
        proj = conn.identity.find_project(project) or conn.identity.create_project(
            name=project, domain_id="default")
        user = conn.identity.create_user(name=name, password=password,
                                         domain_id="default", default_project_id=proj.id)
        for role in roles:
            r = conn.identity.find_role(role) or conn.identity.create_role(name=role)
            conn.identity.assign_project_role_to_user(proj, user, r)

    def add_service(self, stype: str, name: str, url: str) -> None:
        conn = self._setup_conn()
        svc = conn.identity.create_service(type=stype, name=name)
        for iface in ("public", "internal", "admin"):
            conn.identity.create_endpoint(service_id=svc.id, interface=iface, url=url,
                                          region_id="RegionOne")


def _fernet_keys(repo: Path) -> None:
    """A key repository as ``keystone-manage fernet_setup`` leaves it: key 0
    staged, key 1 primary (each keystone-manage run costs seconds here)."""
    from cryptography.fernet import Fernet

    repo.mkdir(mode=0o700)
    for n in (0, 1):
        (repo / str(n)).write_bytes(Fernet.generate_key())
        (repo / str(n)).chmod(0o600)


def start_keystone(venv: Path, tag: str) -> Keystone:
    workdir = Path(tempfile.mkdtemp(prefix="nfvha-keystone-"))
    db = f"nfvha_keystone_{tag}"
    url = fresh_database(db)
    ks = Keystone(venv, workdir, db, _free_port(), secrets.token_urlsafe(12), _free_port())
    for repo in ("fernet", "receipts"):
        _fernet_keys(workdir / repo)
    conf = workdir / "keystone.conf"
    conf.write_text(
        f"[DEFAULT]\nlog_file = {workdir / 'keystone-app.log'}\n"
        f"[database]\nconnection = {url}\n"
        f"[fernet_tokens]\nkey_repository = {workdir / 'fernet'}\n"
        f"[fernet_receipts]\nkey_repository = {workdir / 'receipts'}\n")
    manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(conf)]
    _run([*manage, "db_sync"], "keystone-manage db_sync")
    _run([*manage, "bootstrap", "--bootstrap-password", ks.admin_password,
          "--bootstrap-admin-url", ks.url, "--bootstrap-public-url", ks.url,
          "--bootstrap-internal-url", ks.url, "--bootstrap-region-id", "RegionOne"],
         "keystone-manage bootstrap")
    try:
        ks.start()
        ks.add_service("compute", "nova", ks.nova_url)
    except BaseException:
        ks.stop()
        raise
    return ks


def cleanup_keystone(ks: Keystone) -> None:
    ks.stop()
    drop_database(ks.db)
    shutil.rmtree(ks.workdir, ignore_errors=True)


@dataclass
class Masakari:
    keystone: Keystone
    workdir: Path
    db: str
    port: int
    user: str
    password: str
    api: Optional[Service] = None
    engine: Optional[Service] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self, grace: float = 10) -> None:
        for s in (self.api, self.engine):
            if s is not None:
                s.stop(grace)

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.tail()}" for s in (self.api, self.engine) if s)


def start_masakari(keystone: Keystone, tag: str, transport_url: str) -> Masakari:
    venv = keystone.venv
    workdir = Path(tempfile.mkdtemp(prefix="nfvha-masakari-"))
    db = f"nfvha_masakari_{tag}"
    url = fresh_database(db)
    topic = f"nfvha_test_ha_engine_{tag}"
    m = Masakari(keystone, workdir, db, _free_port(), "masakari",
                 secrets.token_urlsafe(12))
    keystone.add_user(m.user, m.password, ["admin", "service"])
    keystone.add_service("instance-ha", "masakari", m.url)
    shutil.copy(venv / "etc" / "masakari" / "api-paste.ini", workdir / "api-paste.ini")
    auth = (f"auth_url = {keystone.url}\nauth_type = password\n"
            f"username = {m.user}\npassword = {m.password}\nproject_name = service\n"
            "user_domain_name = Default\nproject_domain_name = Default\n")
    conf = workdir / "masakari.conf"
    conf.write_text(
        "[DEFAULT]\n"
        f"transport_url = {transport_url}\n"
        f"masakari_topic = {topic}\n"
        f"control_exchange = nfvha-test-masakari-{tag}\n"
        "auth_strategy = keystone\n"
        f"log_dir = {workdir}\n"
        f"os_privileged_user_name = {m.user}\nos_privileged_user_password = {m.password}\n"
        f"os_privileged_user_tenant = service\nos_privileged_user_auth_url = {keystone.url}\n"
        "os_region_name = RegionOne\n"
        "nova_catalog_admin_info = compute:nova:publicURL\n"
        # the engine polls the Nova stand-in each second (its default), and
        # gives a stop or start a minute before calling the recovery failed
        "wait_period_after_power_off = 60\nwait_period_after_power_on = 60\n"
        # one API worker: no random pause against concurrent inserts (up to 5 s
        # per notification by default without a coordination backend)
        "notification_delay_max = 0\n"
        "graceful_shutdown_timeout = 5\n"
        f"[database]\nconnection = {url}\n"
        f"[taskflow]\nconnection = {url}\n"
        f"[keystone_authtoken]\nwww_authenticate_uri = {keystone.url}\n"
        "service_token_roles_required = true\n" + auth +
        "[instance_failure]\nprocess_all_instances = true\n"
        "[oslo_messaging_notifications]\ndriver = noop\n")
    manage = [str(venv / "bin" / "masakari-manage"), "--config-file", str(conf)]
    _run([*manage, "db", "sync"], "masakari-manage db sync")
    env = {"OS_MASAKARI_CONFIG_DIR": str(workdir)}
    m.api = _gunicorn(venv, workdir, "masakari-api", "masakari.wsgi.api", m.port, env,
                      args=("--config-file", str(conf)))
    m.engine = Service("masakari-engine", [str(venv / "bin" / "masakari-engine"),
                                           "--config-file", str(conf)],
                       workdir / "masakari-engine.out", env=env)
    try:
        m.api.start()
        m.engine.start()
        m.api.wait_http(f"http://127.0.0.1:{m.port}/")
        _wait_engine_listening(m, transport_url, topic)
    except BaseException:
        m.stop()
        raise
    return m


def _wait_engine_listening(m: Masakari, transport_url: str, topic: str,
                           timeout: float = 90) -> None:
    """The engine consumes once its queue (named after the topic) exists: a
    cast to a topic nobody has declared yet would be dropped."""
    from urllib.parse import urlsplit

    import amqp  # py-amqp: in nfvha's venv through kombu

    url = urlsplit(transport_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert m.engine is not None
        if m.engine.proc is None or m.engine.proc.poll() is not None:
            raise Unavailable(f"masakari-engine exited: {m.logs()}")
        conn = amqp.Connection(f"{url.hostname}:{url.port or 5672}", userid=url.username,
                               password=url.password)
        try:
            conn.connect()
            ch = conn.channel()
            ch.queue_declare(topic, passive=True)
            return
        except amqp.exceptions.NotFound:
            pass
        finally:
            conn.collect()
        time.sleep(0.3)
    raise Unavailable(f"masakari-engine did not listen in {timeout:.0f} s: {m.logs()}")


def cleanup_masakari(m: Masakari) -> None:
    m.stop(grace=2)  # its database goes next: nothing to finish
    drop_database(m.db)
    shutil.rmtree(m.workdir, ignore_errors=True)
