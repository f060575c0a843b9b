"""The libvirtd nfvha runs for tests and the demo (compute/libvirt_daemon.py):
under a child-subreaper supervisor that reaps the domains' QEMUs at once,
stopped with the domains it started; an already running one is reused."""
from __future__ import annotations

import os
import signal
import time
import uuid as uuidlib
from pathlib import Path

import libvirt
import pytest
from conftest import missing, require_command

from nfvha.compute import domain_xml, libvirt_daemon
from nfvha.compute.libvirt_daemon import LibvirtDaemon

pytestmark = [pytest.mark.system]


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _domain(conn) -> tuple[str, int]:
    uuid = str(uuidlib.uuid4())
    name = f"nfvha-d-{uuid[:8]}"
    conn.createXML(domain_xml.minimal_domain(name, uuid), 0)
    with open(f"/run/libvirt/qemu/{name}.pid") as f:
        return name, int(f.read().strip())


@pytest.fixture(autouse=True)
def _no_domain_logs_left():
    yield
    for log in Path("/var/log/libvirt/qemu").glob("nfvha-d-*.log"):
        log.unlink(missing_ok=True)


@pytest.mark.slow
def test_start_reap_and_stop_or_reuse() -> None:
    """With no libvirtd running: ours starts, its QEMUs are the supervisor's
    children, a second start reuses it, stop() destroys the domain and ends
    every process. With one running (another session's): it is reused and
    left running."""
    require_command("qemu-system-x86_64")
    reason = libvirt_daemon.unavailable_reason()
    if reason:
        missing(reason)
    if libvirt_daemon.answers():
        d = LibvirtDaemon().start()
        assert d.reused and "reusing the libvirtd already running" in d.describe()
        d.stop()
        assert libvirt_daemon.answers()  # not ours: left alone
        return
    d = LibvirtDaemon().start()
    try:
        assert not d.reused and d._sup is not None
        sup = d._sup.pid
        assert _ppid(d.pid) == sup and "child-subreaper" in d.describe()
        conn = libvirt.open(d.uri)
        name, qemu = _domain(conn)
        conn.close()
        assert _ppid(qemu) == sup  # daemonized by libvirt, reparented to us, not to PID 1
        other = LibvirtDaemon().start()
        assert other.reused and other.pid == d.pid
        other.stop()
        assert libvirt_daemon.answers()
    finally:
        d.stop()
    end = time.monotonic() + 10
    while not (_gone(qemu) and _gone(sup)) and time.monotonic() < end:
        time.sleep(0.05)
    assert _gone(qemu), "the domain's QEMU outlived stop()"
    assert _gone(sup) and _gone(d.pid)
    assert not libvirt_daemon.answers()
    assert "stopped" in (d.workdir / "supervisor.log").read_text()


@pytest.mark.slow
def test_killed_qemu_is_reaped_at_once(libvirtd) -> None:
    """Under our supervisor a killed QEMU is no zombie for long (PID 1 here
    reaps every ~2 s, and libvirtd reports the domain stopped only once it is
    reaped)."""
    if libvirtd.reused:
        missing("the running libvirtd is not ours: its QEMUs are not reaped by us")
    conn = libvirt.open(libvirtd.uri)
    try:
        name, qemu = _domain(conn)
        os.kill(qemu, signal.SIGKILL)
        t0 = time.monotonic()
        while os.path.exists(f"/proc/{qemu}"):  # a zombie still has its /proc entry
            assert time.monotonic() - t0 < 0.5, "QEMU not reaped within 0.5 s"
            time.sleep(0.005)
        # libvirtd is done with it (its log written) once the transient domain is gone
        while name in {d.name() for d in conn.listAllDomains()}:
            assert time.monotonic() - t0 < 10, "libvirtd still lists the killed domain"
            time.sleep(0.02)
    finally:
        conn.close()
