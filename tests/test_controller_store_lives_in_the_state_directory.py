"""`nfvha all-in-one` and `nfvha controller` keep their SQLite store in the
state directory by default, never in the directory they were started from,
and say where at start.

The choice of directory is a function of (euid, environment), checked here
for root and for a user; the commands themselves run with systemd's
$STATE_DIRECTORY pointing into a temporary directory (the tests run as root,
and must not write to the machine's /var/lib/nfvha).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port
from oslo_config import cfg

from nfvha.conf import database

ROOT = Path(__file__).resolve().parent.parent


def test_root_keeps_its_state_in_var_lib_nfvha(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert database.state_dir(0, env) == Path("/var/lib/nfvha")
    assert database.default_connection(0, env) == "sqlite:////var/lib/nfvha/nfvha.sqlite"


def test_a_user_keeps_it_in_the_xdg_state_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert database.state_dir(1000, {"HOME": str(home)}) == home / ".local/state/nfvha"
    assert database.state_dir(1000, {"HOME": str(home), "XDG_STATE_HOME": str(tmp_path / "x")}) \
        == tmp_path / "x" / "nfvha"
    # The XDG spec: a relative path in $XDG_STATE_HOME is invalid, ignore it.
    assert database.state_dir(1000, {"HOME": str(home), "XDG_STATE_HOME": "rel"}) \
        == home / ".local/state/nfvha"
    assert database.default_connection(1000, {"HOME": str(home)}) \
        == f"sqlite:///{home}/.local/state/nfvha/nfvha.sqlite"


def test_systemd_state_directory_comes_first(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "STATE_DIRECTORY": f"{tmp_path}/a:{tmp_path}/b"}
    assert database.state_dir(0, env) == tmp_path / "a"
    assert database.state_dir(1000, env) == tmp_path / "a"


def test_configured_and_command_line_urls_win(tmp_path: Path) -> None:
    conf = cfg.ConfigOpts()
    database.register(conf)
    conf([])
    conf.set_override("connection", "postgresql://nfvha:secret@db/nfvha", group="database")
    assert database.resolve("sqlite:///x.sqlite", conf) == ("sqlite:///x.sqlite", "--db")
    url, origin = database.resolve(None, conf)
    assert (url, origin) == ("postgresql://nfvha:secret@db/nfvha", "[database] connection")
    assert "secret" not in database.describe(url)
    assert database.describe("sqlite:///rel.sqlite") == f"SQLite file {os.getcwd()}/rel.sqlite"


@pytest.mark.parametrize("command", ["all-in-one", "controller"])
def test_the_command_opens_its_store_in_the_state_directory(tmp_path: Path,
                                                            command: str) -> None:
    cwd, state = tmp_path / "cwd", tmp_path / "state" / "nfvha"
    cwd.mkdir()
    conf = tmp_path / "nfvha.conf"  # no [database] connection: the default applies
    conf.write_text(f"[heartbeat]\ninstances_dir = {tmp_path}\nspool_dir =\n")
    env = {**os.environ, "STATE_DIRECTORY": str(state), "HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "nfvha.cli.main", command, "--config-file", str(conf),
            "--api", f"127.0.0.1:{free_port()}"]
    log_path = tmp_path / "out.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60  # a loaded 2-core machine: generous
        while "REST API at" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = log_path.read_text(errors="replace")
    assert f"controller store: SQLite file {state / 'nfvha.sqlite'} (default" in out, out
    assert (state / "nfvha.sqlite").is_file()
    assert list(cwd.iterdir()) == []  # nothing left where it was started


def test_a_state_directory_that_cannot_be_made_says_so(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("STATE_DIRECTORY", str(blocker / "nfvha"))
    conf = cfg.ConfigOpts()
    database.register(conf)
    conf([])
    with pytest.raises(SystemExit, match="cannot create the state directory"):
        database.resolve(None, conf)
