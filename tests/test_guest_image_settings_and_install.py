"""The guest image's per-VM settings and its copy for libvirt, without a VM:
the kernel command line kernel_cmdline() writes is the one /init reads (its
parsing runs here in busybox sh over a fake /proc/cmdline), and install()
leaves files libvirt's QEMU user can read."""
from __future__ import annotations

import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing

from nfvha.demo import guest_image as gi


def test_cmdline_carries_agent_options_and_init_settings() -> None:
    line = gi.kernel_cmdline(interval_ms=100, corrective_action="stop", hostname="vm-a",
                             probes=["file:/run/x,period_ms=50", "tcp:127.0.0.1:80"],
                             wait_ports=["nfvha.test.control"], qemu_ga=False,
                             agent_options={"log-level": "DEBUG", "single_port": True,
                                            "event_script": None})
    words = line.split()
    assert words[:3] == ["console=ttyS0", "quiet", "panic=0"]  # the host decides after a panic
    for w in ("nfvha.interval_ms=100", "nfvha.corrective_action=stop", "nfvha.hostname=vm-a",
              "nfvha.probe=file:/run/x,period_ms=50", "nfvha.probe=tcp:127.0.0.1:80",
              "nfvha.wait_ports=nfvha.test.control", "nfvha.qga=0",
              "nfvha.log_level=DEBUG", "nfvha.single_port"):
        assert w in words, (w, line)
    assert "event_script" not in line  # None: left out
    assert gi.kernel_cmdline(console=None, quiet=False, panic=-1) == "panic=-1"


@pytest.mark.parametrize("bad", [
    {"hostname": "two words"},
    {"probes": ['exec:"quoted"']},
    {"agent_options": {"Device": "/dev/x"}},      # not an option name
    {"agent_options": {"hostname": "x"}},         # /init's own key, not the agent's
    {"probes": ["file:/" + "x" * 3000]},          # longer than the kernel takes
])
def test_cmdline_refuses_what_init_could_not_read(bad: dict) -> None:
    with pytest.raises(ValueError):
        gi.kernel_cmdline(**bad)


def _init_settings(tmp_path: Path, cmdline: str) -> tuple[list[str], dict[str, str]]:
    """Runs /init's settings part (up to the host name) in busybox sh, with
    /proc/cmdline and /run/nfvha under tmp_path; returns the agent's extra
    arguments and /init's variables."""
    busybox = shutil.which("busybox")
    if busybox is None:
        missing("busybox is not installed (apt-get install busybox-static)")
    init = gi.INIT.replace("__CONTROL__", gi.CONTROL_PORT).replace(
        "__HEARTBEAT__", gi.HEARTBEAT_PORT)
    start = init.index("NFVHA_AGENT_ARGS=")
    end = init.index("if [ -z \"$NFVHA_HOSTNAME\" ]")
    part = init[start:end].replace("/proc/cmdline", str(tmp_path / "cmdline")).replace(
        "/run/nfvha/", f"{tmp_path}/").replace("/etc/nfvha-vm.env", str(tmp_path / "env"))
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    script = ("log() { echo \"LOG $*\"; }\n" + part +
              'echo "HOSTNAME=$NFVHA_HOSTNAME"; echo "PORTS=$NFVHA_PORTS"; '
              'echo "AUTOSTART=$NFVHA_AUTOSTART"; echo "QGA=$NFVHA_QGA"\n')
    out = subprocess.run([busybox, "sh", "-c", script], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if re.match(r"[A-Z]+=", line))
    values["log"] = "\n".join(line for line in out.splitlines() if line.startswith("LOG"))
    return (tmp_path / "cmdline-args").read_text().splitlines(), values


def test_init_reads_the_command_line_kernel_cmdline_writes(tmp_path: Path) -> None:
    line = gi.kernel_cmdline(interval_ms=250, corrective_action="log", hostname="vm-b",
                             probes=["file:/run/a=b"], wait_ports=["p1", "p2"], autostart=False,
                             qemu_ga=False, agent_options={"single-port": True})
    # Words that are not /init's pass by untouched; a malformed key is ignored, not run.
    args, values = _init_settings(tmp_path, "BOOT_IMAGE=/vmlinuz root=/dev/vda " + line +
                                  " nfvha.$(reboot)=1 nfvha.name=$(id)")
    assert args == ["--interval-ms", "250", "--corrective-action", "log", "--single-port",
                    "--probe", "file:/run/a=b", "--name", "$(id)"]  # a value stays a value
    assert values["HOSTNAME"] == "vm-b" and values["PORTS"] == "p1 p2"
    assert values["AUTOSTART"] == "0" and values["QGA"] == "0"
    assert "ignored kernel parameter nfvha.$(reboot)=1" in values["log"]


def test_init_defaults_without_nfvha_parameters(tmp_path: Path) -> None:
    args, values = _init_settings(tmp_path, "console=ttyS0 quiet panic=0")
    assert args == []
    assert values["PORTS"] == f"{gi.CONTROL_PORT} {gi.HEARTBEAT_PORT}"
    assert values["AUTOSTART"] == "1" and values["QGA"] == "1" and values["HOSTNAME"] == ""


def _fake_image(tmp_path: Path, initrd_bytes: bytes) -> gi.GuestImage:
    src = tmp_path / "cache"
    src.mkdir(exist_ok=True)
    kernel = src / "vmlinuz-6.1.0-test"
    kernel.write_bytes(b"MZ kernel")
    initrd = src / f"initrd-{len(initrd_bytes)}.img"
    initrd.write_bytes(initrd_bytes)
    return gi.GuestImage(kernel=kernel, initrd=initrd, python="/usr/bin/python3",
                         python_version="3.11", kernel_release="6.1.0-test",
                         initrd_bytes=len(initrd_bytes), qemu_ga=False, pvpanic=True)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory others may enter (pytest's tmp_path sits in a 0700 one)."""
    d = Path(tempfile.mkdtemp(prefix="nfvha-img-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_install_leaves_world_readable_files_and_stable_links(open_dir: Path) -> None:
    tmp_path = open_dir
    dest = tmp_path / "var" / "lib" / "nfvha" / "images"
    first = gi.install(_fake_image(tmp_path, b"one"), dest, keep=2)
    assert first.kernel == dest / "vmlinuz-6.1.0-test" and first.kernel.read_bytes() == b"MZ kernel"
    assert first.initrd.parent == dest and first.initrd.read_bytes() == b"one"
    for p in (first.kernel, first.initrd):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
    for d in (dest, dest.parent, dest.parent.parent):  # created here: others may enter
        assert d.stat().st_mode & stat.S_IXOTH
    assert (dest / "nfvha-guest.initrd").read_bytes() == b"one"
    # Newer builds: the links follow, files stay named by content, old ones pruned.
    gi.install(_fake_image(tmp_path, b"two!"), dest, keep=2)
    third = gi.install(_fake_image(tmp_path, b"three"), dest, keep=2)
    assert (dest / "nfvha-guest.initrd").read_bytes() == b"three"
    assert (dest / "nfvha-guest.vmlinuz").read_bytes() == b"MZ kernel"
    assert sorted(p.read_bytes() for p in dest.glob("nfvha-guest-initrd-*")) == [b"three",
                                                                                b"two!"]
    assert third.initrd.exists()


def test_install_names_a_directory_others_cannot_enter(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    with pytest.raises(PermissionError, match="closed"):
        gi.install(_fake_image(tmp_path, b"x"), closed / "images")
