"""The guest side stays Python 3.8 + standard library: compile, import, zipapp --help."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from conftest import require_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"
MINE = ["nfvha/__init__.py", "nfvha/protocol/__init__.py", "nfvha/protocol/framing.py",
        "nfvha/protocol/heartbeat.py", "nfvha/protocol/host.py", "nfvha/protocol/guest.py",
        "nfvha/protocol/sgwire.py", "nfvha/protocol/sgsession.py", "nfvha/protocol/sgclient.py",
        "nfvha/protocol/servergroup.py", "nfvha/guest/__init__.py", "nfvha/guest/__main__.py",
        "nfvha/guest/agent.py", "nfvha/guest/cli.py", "nfvha/guest/device.py",
        "nfvha/guest/probes.py"]


@pytest.fixture
def py38() -> str:
    if not os.path.exists(PY38):
        require_command("python3.8")
        return "python3.8"
    return PY38


def test_guest_and_protocol_import_under_py38_with_stdlib_only(py38: str) -> None:
    # -I: isolated (no site-packages, no user env); -S: not even site.
    code = (f"import sys; sys.path.insert(0, {REPO!r})\n"
            "import nfvha.protocol.framing, nfvha.protocol.heartbeat, nfvha.protocol.host\n"
            "import nfvha.protocol.guest, nfvha.guest, nfvha.guest.cli\n"
            "from nfvha.protocol import servergroup, sgclient, sgsession, sgwire\n"
            "from nfvha.guest import Agent, register_health_check\n"
            "print('ok')\n")
    out = subprocess.run([py38, "-I", "-S", "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_my_modules_compile_under_py38(py38: str) -> None:
    files = [os.path.join(REPO, f) for f in MINE]
    code = ("import sys\n"
            "for f in sys.argv[1:]:\n"
            "    compile(open(f, encoding='utf-8').read(), f, 'exec')\n")
    out = subprocess.run([py38, "-I", "-c", code] + files, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_zipapp_builds_and_runs_help_under_py38(py38: str, tmp_path: object) -> None:
    target = os.path.join(str(tmp_path), "nfvha-guest.pyz")
    built = subprocess.run([sys.executable, os.path.join(REPO, "scripts",
                                                         "build_guest_zipapp.py"),
                            "--output", target], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    assert os.path.getsize(target) > 1000
    # Run from an empty directory so nothing but the archive can provide nfvha.
    out = subprocess.run([py38, "-I", target, "--help"], capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "nfvha-guest" in out.stdout and "--probe" in out.stdout
    bad = subprocess.run([py38, "-I", target, "--probe", "bogus:x"], capture_output=True,
                         text=True, timeout=60, cwd=str(tmp_path))
    assert bad.returncode == 2 and "probe" in bad.stderr
    # The build copies the .py files of nfvha/protocol, not its subfolders: every
    # protocol module must be in the archive, and import from it alone.
    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
    for name in os.listdir(os.path.join(REPO, "nfvha", "protocol")):
        if name.endswith(".py"):
            assert "nfvha/protocol/" + name in names, name
    code = (f"import sys; sys.path.insert(0, {target!r})\n"
            "from nfvha.protocol import servergroup, sgclient, sgsession, sgwire\n"
            "assert sgwire.__file__.startswith(sys.path[0]), sgwire.__file__\n"
            "assert servergroup.client_step is sgclient.client_step\n")
    out = subprocess.run([py38, "-I", "-S", "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
