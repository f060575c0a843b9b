"""The guest agent finds a virtio-serial port that appears after it started
(hot-plugged, or a guest without udev) and waits again when it goes away.

No VM: a fake sysfs/dev tree in a temporary directory, with a pseudo-terminal
standing in for the /dev/vportNpM node (tests/test_qemu_guest_lifecycle.py
does the same against a real kernel).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

import pytest

import nfvha.guest.agent as agent_mod
from nfvha.guest import Agent
from nfvha.guest.device import PortLocator
from nfvha.protocol.framing import LineDecoder

NAME = "cgcs.heartbeat"


class FakeGuest:
    """/sys/class/virtio-ports/vportNpM/name and /dev/vportNpM (a link to a pty)."""

    def __init__(self, root: Path) -> None:
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.ports = self.sys / "class" / "virtio-ports"
        self.ports.mkdir(parents=True)
        (self.dev / "virtio-ports").mkdir(parents=True)
        self.device = str(self.dev / "virtio-ports" / NAME)  # what the agent is told
        self.masters: dict[str, int] = {}

    def plug(self, node: str, name: str = NAME, udev_link: bool = False) -> int:
        """The kernel's view of a new port; returns the host side (pty master)."""
        master, slave = os.openpty()
        slave_path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        (self.ports / node).mkdir()
        (self.ports / node / "name").write_text(name + "\n")
        os.symlink(slave_path, self.dev / node)
        if udev_link:
            os.symlink(self.dev / node, self.device)
        self.masters[node] = master
        return master

    def unplug(self, node: str) -> None:
        for p in (self.ports / node / "name", self.dev / node):
            p.unlink()
        (self.ports / node).rmdir()
        os.close(self.masters.pop(node))  # the agent's reads fail (EIO), as on a real unplug

    def locator(self) -> PortLocator:
        return PortLocator(self.device, sys_root=str(self.sys), dev_root=str(self.dev))

    def close(self) -> None:
        for fd in self.masters.values():
            os.close(fd)


@pytest.fixture
def guest(tmp_path: Path) -> Any:
    g = FakeGuest(tmp_path)
    yield g
    g.close()


def test_locator_finds_a_port_by_its_sysfs_name(guest: FakeGuest) -> None:
    loc = guest.locator()
    assert loc.locate() is None  # no port at all
    guest.plug("vport0p1", name="nfvha.test.control")
    assert loc.locate() is None  # another port's name
    guest.plug("vport0p2")
    assert loc.locate() == str(guest.dev / "vport0p2")  # no udev link: the node itself


def test_locator_trusts_a_link_only_while_its_node_has_the_name(guest: FakeGuest) -> None:
    guest.plug("vport0p1", udev_link=True)
    assert guest.locator().locate() == guest.device
    # The port goes and another one takes its node number; the link stays (no udev
    # to remove it): the locator must not open the wrong port through it.
    guest.unplug("vport0p1")
    guest.plug("vport0p1", name="org.qemu.guest_agent.0")
    assert guest.locator().locate() is None
    guest.plug("vport0p3")
    assert guest.locator().locate() == str(guest.dev / "vport0p3")


def test_locator_without_sysfs_and_for_other_paths(tmp_path: Path) -> None:
    # A guest without the virtio_console driver loaded: no /sys/class/virtio-ports.
    assert PortLocator(str(tmp_path / "virtio-ports" / NAME), sys_root=str(tmp_path)).locate() \
        is None
    # Not a virtio-ports name (a pty link, /dev/vport0p1 given directly): open() decides.
    assert PortLocator("/run/some-pty").locate() == "/run/some-pty"


async def _read_msg(master: int, msg_type: str, timeout: float) -> dict[str, Any]:
    decoder = LineDecoder(65536)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, OSError):
            data = b""
        for item in decoder.feed(data):
            if isinstance(item, dict) and item.get("msg_type") == msg_type:
                return item
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {msg_type} message from the agent in {timeout} s")


def _lines(caplog: Any, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_agent_registers_on_a_port_plugged_later_and_waits_again_after_unplug(
        guest: FakeGuest, caplog: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(agent_mod, "_GLOBAL_CHECKS", [])
    caplog.set_level(logging.DEBUG, logger="nfvha.guest")
    agent = Agent(guest.device, name="hotplug", interval_ms=100, locator=guest.locator())
    run = asyncio.ensure_future(agent.run())
    try:
        await asyncio.sleep(1.2)  # several polls with no port
        assert not run.done()
        master = guest.plug("vport0p2")
        t0 = time.monotonic()
        init1 = await _read_msg(master, "init", 5)
        found_s = time.monotonic() - t0
        assert found_s < 2.0, found_s  # polled every 0.5 s, not given up on
        assert init1["heartbeat_interval_ms"] == 100

        guest.unplug("vport0p2")
        await asyncio.sleep(1.5)  # several polls with the port gone
        assert not run.done()
        # Back under another node number, as a re-plugged port may be.
        master = guest.plug("vport0p5")
        init2 = await _read_msg(master, "init", 5)
        assert init2["invocation_id"] == init1["invocation_id"]  # same process, no restart
    finally:
        agent.stop()
        assert await asyncio.wait_for(run, 5) == 0
    # One clear line per event, not one per poll, and no traceback.
    assert len(_lines(caplog, "waiting for it to appear")) == 1, caplog.text
    assert len(_lines(caplog, "is gone; waiting for it to come back")) == 1, caplog.text
    assert len(_lines(caplog, "is there")) == 2, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], \
        caplog.text


async def test_agent_started_with_the_port_there_keeps_working(
        guest: FakeGuest, monkeypatch: Any) -> None:
    """The usual case stays as it was: udev's link there from the start."""
    monkeypatch.setattr(agent_mod, "_GLOBAL_CHECKS", [])
    master = guest.plug("vport0p1", udev_link=True)
    agent = Agent(guest.device, name="plain", interval_ms=100, locator=guest.locator())
    run = asyncio.ensure_future(agent.run())
    try:
        init: Optional[dict[str, Any]] = await _read_msg(master, "init", 5)
        assert init is not None and init["name"] == "plain"
    finally:
        agent.stop()
        assert await asyncio.wait_for(run, 5) == 0


async def test_a_read_failing_with_enodev_is_an_unplug_even_before_the_node_goes(
        guest: FakeGuest, caplog: Any, monkeypatch: Any) -> None:
    """On a real unplug the kernel fails the read (ENODEV) a moment before it
    removes /dev/vportNpM and its sysfs entry: still one "gone" line, then the
    agent looks for the port again (and finds it here, as it is still listed)."""
    monkeypatch.setattr(agent_mod, "_GLOBAL_CHECKS", [])
    caplog.set_level(logging.DEBUG, logger="nfvha.guest")
    unplugging = {"now": False}
    real_read = os.read

    def read(fd: int, n: int) -> bytes:
        if unplugging["now"] and fd == agent._fd:
            unplugging["now"] = False
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return real_read(fd, n)

    monkeypatch.setattr(agent_mod.os, "read", read)
    master = guest.plug("vport0p1")
    agent = Agent(guest.device, name="race", interval_ms=100, locator=guest.locator())
    run = asyncio.ensure_future(agent.run())
    try:
        first = await _read_msg(master, "init", 5)
        unplugging["now"] = True
        os.write(master, b"\n")  # something to read: the read that fails
        second = await _read_msg(master, "init", 5)
        assert second["invocation_id"] == first["invocation_id"]
    finally:
        agent.stop()
        assert await asyncio.wait_for(run, 5) == 0
    assert len(_lines(caplog, "is gone; waiting for it to come back")) == 1, caplog.text
    assert not _lines(caplog, "reopening in"), caplog.text


def test_locator_ignores_a_plain_file_in_the_ports_name(guest: FakeGuest) -> None:
    # A shell's `exec 4<>/dev/virtio-ports/NAME` creates one when the port is missing.
    Path(guest.device).write_text("")
    assert guest.locator().locate() is None
    guest.plug("vport0p1")
    assert guest.locator().locate() == str(guest.dev / "vport0p1")
