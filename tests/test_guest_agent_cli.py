"""nfvha-guest command line: options, INI config precedence, the `group` hook."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

import pytest

from nfvha.guest import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults() -> None:
    settings = cli.resolve(cli.build_parser().parse_args([]))
    assert settings["device"] == "/dev/virtio-ports/cgcs.heartbeat"
    assert settings["interval_ms"] == 200
    assert settings["corrective_action"] == "reboot"
    assert settings["probe"] == []


def test_config_file_then_command_line_wins(tmp_path: Any) -> None:
    conf = os.path.join(str(tmp_path), "guest.ini")
    with open(conf, "w") as f:
        f.write("[guest]\ndevice = /dev/vport0p1\ninterval_ms = 400\ncorrective_action = log\n"
                "name = from-file\nprobes =\n    file:/run/app.ok\n    tcp:127.0.0.1:22\n"
                "vote_secs = 20\nevent_script = /etc/nfvha/vote\n")
    args = cli.build_parser().parse_args(["--config", conf, "--interval-ms", "100",
                                          "--probe", "exec:/bin/true"])
    s = cli.resolve(args)
    assert (s["device"], s["interval_ms"], s["corrective_action"], s["name"],
            s["vote_secs"], s["event_script"]) == (
        "/dev/vport0p1", 100, "log", "from-file", 20, "/etc/nfvha/vote")
    assert s["probe"] == ["file:/run/app.ok", "tcp:127.0.0.1:22", "exec:/bin/true"]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nfvha.guest", *argv], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, PYTHONPATH=REPO))


def test_bad_options_exit_2_with_a_message(tmp_path: Any) -> None:
    out = _run("--corrective-action", "explode")
    assert out.returncode == 2 and "corrective-action" in out.stderr
    out = _run("--probe", "tcp:nohost")
    assert out.returncode == 2 and "tcp:HOST:PORT" in out.stderr
    out = _run("--interval-ms", "0")
    assert out.returncode == 2 and "interval_ms" in out.stderr
    out = _run("--config", os.path.join(str(tmp_path), "missing.ini"))
    assert out.returncode == 2 and "config" in out.stderr


def test_group_without_the_module_says_not_available(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setattr(cli, "_group_module", lambda: None)
    assert cli.main(["group", "send", "hello"]) == 2
    assert "not available" in capsys.readouterr().err


def test_group_hands_over_to_the_module(monkeypatch: Any) -> None:
    seen = {}
    fake = types.SimpleNamespace(
        add_arguments=lambda p: p.add_argument("text"),
        main=lambda args: seen.setdefault("text", args.text) and 0,
    )
    monkeypatch.setattr(cli, "_group_module", lambda: fake)
    assert cli.main(["group", "hi"]) == 0
    assert seen == {"text": "hi"}


@pytest.mark.parametrize("argv", [["--help"], ["group", "--help"]])
def test_help_works(argv: list) -> None:
    out = _run(*argv)
    assert out.returncode == 0 and "usage" in out.stdout
