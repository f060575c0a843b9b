"""The guest agent in a real VM, heartbeated over real virtio-serial.

One tiny VM (QEMU, TCG; tests/qemu_vm.py, docs/qemu-test-vm.md) runs
`python -m nfvha.guest` on /dev/virtio-ports/cgcs.heartbeat. Each test runs
the real `ComputeAgent` on the in-process bus against QEMU's chardev socket,
with a controller endpoint that records what reaches it, and steers the
guest through a second virtio-serial port (remove the health file, SIGSTOP
the agent, ...). Every test starts a fresh compute agent, so each also
checks that the guest registers again after the host side went away.

    .venv/bin/pytest -s tests/test_qemu_virtio_serial.py   # -s shows the figures
"""
from __future__ import annotations

import asyncio
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from qemu_vm import QemuVM, require_vm

from nfvha.bus import make_bus
from nfvha.compute.agent import ComputeAgent
from nfvha.protocol import host as hostsm
from nfvha.protocol.host import HostConfig

pytestmark = [pytest.mark.system, pytest.mark.slow]

INTERVAL_MS = 500  # the guest's; 2 misses -> heartbeat_loss after ~1-1.5 s
FAST_INTERVAL_MS = 100  # for the round-trip sample
WAIT_S = 30.0  # generous: TCG on a loaded 2-core machine


def _fmt(samples: list[float]) -> str:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return (f"n={len(s)} median={statistics.median(s):.2f} ms p99={p99:.2f} ms "
            f"min={s[0]:.2f} ms max={s[-1]:.2f} ms")


@pytest.fixture(scope="module")
def vm() -> Iterator[QemuVM]:
    require_vm()
    with QemuVM(interval_ms=INTERVAL_MS) as machine:
        image: Any = machine.image
        print(f"\n[qemu] booted to the control port in {machine.boot_s:.2f} s "
              f"(kernel {image.kernel_release}, guest Python {image.python_version}, "
              f"initrd {image.initrd_bytes / 1e6:.1f} MB)")
        yield machine


class Controller:
    """The controller's bus endpoint, recording what the compute agent sends."""

    def __init__(self) -> None:
        self.hellos: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []

    async def hello(self, host: str, instances: list[dict[str, Any]],
                    agent_started_at: Any = None) -> None:
        self.hellos.append({"host": host, "instances": instances})

    async def instance_state(self, **kwargs: Any) -> None:
        self.states.append(kwargs)

    async def fault(self, event: dict[str, Any]) -> dict[str, Any]:
        self.faults.append(event)
        return {"ok": True, "id": event["id"]}


class Harness:
    def __init__(self, vm: QemuVM, agent: ComputeAgent, controller: Controller) -> None:
        self.vm = vm
        self.agent = agent
        self.controller = controller
        self.rtt_ms: list[float] = []
        agent.add_observer(self._observe)

    def _observe(self, uuid: str, out: Any, mono: float) -> None:
        if uuid == self.vm.instance_uuid and isinstance(out, hostsm.RoundTrip):
            self.rtt_ms.append(out.ms)

    def faults(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.controller.faults
                if f["instance_uuid"] == self.vm.instance_uuid and kind in (None, f["kind"])]

    def last_state(self) -> dict[str, Any] | None:
        mine = [s for s in self.controller.states if s["instance_uuid"] == self.vm.instance_uuid]
        return mine[-1] if mine else None

    async def until(self, what: str, cond: Callable[[], Any], timeout: float = WAIT_S,
                    agent_alive: bool = True) -> Any:
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            if agent_alive and time.monotonic() >= next_check:
                # A guest agent that died (import error, crash) fails now, not at the timeout.
                if (await self.control("state")) in ("state Z", "state gone"):
                    self._fail(f"the guest agent exited while waiting for {what}")
                next_check = time.monotonic() + 1.0
            await asyncio.sleep(0.02)
        self._fail(f"timed out after {timeout:.0f} s waiting for {what}")

    def _fail(self, why: str) -> NoReturn:
        raise AssertionError(f"{why}; states={self.controller.states[-5:]} "
                             f"faults={self.controller.faults}\n--- guest console ---\n"
                             f"{self.vm.console()[-3000:]}")

    async def control(self, command: str) -> str:
        # The control socket is blocking; keep the event loop (and its timers) running.
        return await asyncio.to_thread(self.vm.control, command)

    async def steady(self) -> None:
        # After a registration the compute agent delays the second challenge by a
        # random part of the interval (to spread guests); measure after that.
        n = len(self.rtt_ms)
        await self.until("two more round trips", lambda: len(self.rtt_ms) >= n + 2)

    async def enabled(self, interval_ms: int) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            s = self.last_state()
            return s if s and s["state"] == "enabled" and s["interval_ms"] == interval_ms else None
        return await self.until(f"the guest enabled at {interval_ms} ms", ok)


@pytest.fixture
async def harness(vm: QemuVM) -> AsyncIterator[Harness]:
    bus = make_bus("inproc://")
    await bus.start()
    controller = Controller()
    await bus.serve_controller(controller)
    agent = ComputeAgent("qemu-test-host", vm.workdir, bus, host_config=HostConfig())
    h = Harness(vm, agent, controller)
    t0 = time.monotonic()
    await agent.start()
    try:
        await h.enabled(INTERVAL_MS)
        print(f"\n[qemu] compute agent start -> guest enabled: {time.monotonic() - t0:.2f} s")
        yield h
    finally:
        await agent.stop()
        await bus.stop()


async def test_guest_in_vm_registers_and_answers_challenges(harness: Harness) -> None:
    state = harness.last_state()
    # The agent registers the guest's host name, set by /init from the config.
    assert state is not None and state["name"] == harness.vm.hostname, state
    # Answers keep coming: 6 valid round trips take ~3 s at 500 ms.
    await harness.until("6 answered challenges", lambda: len(harness.rtt_ms) >= 6)
    assert harness.faults() == []
    assert harness.agent.counters["violations"] == 0


async def test_unhealthy_app_in_vm_reports_unhealthy_fault(harness: Harness) -> None:
    await harness.steady()
    t0 = time.monotonic()
    await harness.control("unhealthy")
    t_ack = time.monotonic()  # the guest's shell has removed the file
    fault = (await harness.until("an unhealthy fault", lambda: harness.faults("unhealthy")))[0]
    print(f"\n[qemu] health file removed -> unhealthy fault detected: "
          f"{(fault['detected_mono'] - t_ack) * 1000:.0f} ms after the guest's ack, "
          f"{(fault['detected_mono'] - t0) * 1000:.0f} ms after the command "
          f"(interval {INTERVAL_MS} ms, file probe period 100 ms)")
    # The state cast may trail the fault call (different paths to the controller).
    await harness.until("health unhealthy", lambda: harness.last_state()["health"] == "unhealthy")
    await harness.control("healthy")
    await harness.until("healthy again", lambda: harness.last_state()["health"] == "healthy")
    # One fault for one transition, and nothing else went wrong on the way.
    assert [f["kind"] for f in harness.faults()] == ["unhealthy"]


async def test_hung_agent_in_vm_reports_heartbeat_loss(harness: Harness) -> None:
    await harness.steady()
    t0 = time.monotonic()
    await harness.control("stop")
    try:
        assert await harness.control("state") == "state T"  # really stopped
        fault = (await harness.until("heartbeat_loss",
                                     lambda: harness.faults("heartbeat_loss")))[0]
    finally:
        await harness.control("cont")
    print(f"\n[qemu] agent SIGSTOPped -> heartbeat_loss detected: "
          f"{(fault['detected_mono'] - t0) * 1000:.0f} ms "
          f"(interval {INTERVAL_MS} ms, threshold {HostConfig().failure_threshold})")
    # Nothing reported faster than two missed intervals could justify.
    assert fault["detected_mono"] - t0 >= (HostConfig().failure_threshold - 1) * INTERVAL_MS / 1000
    # Resumed, it answers again and the host re-enables it.
    await harness.enabled(INTERVAL_MS)
    assert [f["kind"] for f in harness.faults()] == ["heartbeat_loss"]


async def test_round_trip_over_real_virtio_serial(harness: Harness) -> None:
    # A clean exit first: the agent's `exit` disables the instance, no alarm.
    await harness.control("term")
    assert (await harness.control("wait")).startswith("wait")
    await harness.until("disabled after exit", lambda: harness.last_state()["state"] == "disabled",
                        agent_alive=False)
    assert harness.faults() == []
    args = harness.vm.agent_args.copy()
    args[args.index("--interval-ms") + 1] = str(FAST_INTERVAL_MS)
    await harness.control("start " + " ".join(args))
    try:
        await harness.enabled(FAST_INTERVAL_MS)
        assert harness.faults() == []  # a restarted agent registers again: no alarm
        harness.rtt_ms.clear()
        await harness.until("100 round trips", lambda: len(harness.rtt_ms) >= 100)
        print(f"\n[qemu] challenge -> response round trip over virtio-serial, guest agent in "
              f"TCG VM, {FAST_INTERVAL_MS} ms interval: {_fmt(harness.rtt_ms)}")
    finally:
        # Leave the VM as the module found it (for tests added after this one).
        await harness.control("term")
        await harness.control("wait")
        await harness.control("start " + " ".join(harness.vm.agent_args))


def test_raw_echo_round_trip_over_virtio_serial(vm: QemuVM) -> None:
    """The channel's own round trip, without Python in the guest: busybox cat
    echoes the heartbeat port. The baseline the agent's round trip adds to."""
    vm.control("term")
    vm.control("wait")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(vm.heartbeat_socket))  # before "echo": cat needs a host to read from
        vm.control("echo")
        sock.settimeout(0.2)
        buf = b""

        def echo(line: bytes, timeout: float) -> bool:
            nonlocal buf
            sock.sendall(line)
            deadline = time.monotonic() + timeout
            while line not in buf:
                if time.monotonic() > deadline:
                    return False
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                assert data, "QEMU closed the heartbeat socket"
                buf += data
            buf = buf[buf.index(line) + len(line):]
            return True

        # Warm-up: cat may still be starting.
        deadline = time.monotonic() + WAIT_S
        while not echo(b"\n{\"warm\":1}\n", 0.5):
            assert time.monotonic() < deadline, vm.console()[-3000:]
        samples = []
        for i in range(200):
            # The size of a challenge message.
            line = (b'\n{"version":3,"revision":1,"msg_type":"challenge","sequence":%d,'
                    b'"heartbeat_challenge":%d}\n' % (i, 1_000_000_000 + i))
            t0 = time.perf_counter()
            assert echo(line, 5.0), f"echo {i} lost"
            samples.append((time.perf_counter() - t0) * 1000)
        print(f"\n[qemu] raw echo round trip over virtio-serial (busybox cat in the TCG "
              f"guest): {_fmt(samples)}")
        vm.control("noecho")
        # Proof that the echo came from inside the guest: with cat gone, silence.
        assert not echo(b"\n{\"after\":1}\n", 1.0)
    finally:
        sock.close()
        vm.control("start " + " ".join(vm.agent_args))


async def test_all_in_one_process_reports_vm_faults_over_rest(vm: QemuVM, tmp_path: Path) -> None:
    """The shipped command, not a library: `nfvha all-in-one` watching the VM's
    socket directory; what it saw is read back through its REST API."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "all-in-one.log", "wb")  # closed in finally
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.cli.main", "all-in-one", "--instances-dir", str(vm.workdir),
        "--api", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path / 'db.sqlite'}",
        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)

    async def poll(what: str, fn: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = fn()
                if got:
                    return got
            except httpx.HTTPError:
                pass
            assert proc.returncode is None, (tmp_path / "all-in-one.log").read_text()[-3000:]
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}\n"
                             f"{(tmp_path / 'all-in-one.log').read_text()[-3000:]}\n"
                             f"--- guest console ---\n{vm.console()[-3000:]}")

    def heartbeat() -> dict[str, Any]:
        r = httpx.get(f"{api}/v1/instances/{vm.instance_uuid}", timeout=2)
        return r.json()["heartbeat"] if r.status_code == 200 else {}

    def events(kind: str) -> list[dict[str, Any]]:
        return [e for e in httpx.get(f"{api}/v1/events", timeout=2).json()
                if e["instance_uuid"] == vm.instance_uuid and e["kind"] == kind]

    try:
        hb = await poll("the VM enabled in /v1/instances",
                        lambda: (h := heartbeat()).get("state") == "enabled" and h)
        assert hb["interval_ms"] == INTERVAL_MS
        await asyncio.to_thread(vm.control, "stop")
        try:
            loss = await poll("heartbeat_loss in /v1/events", lambda: events("heartbeat_loss"))
        finally:
            await asyncio.to_thread(vm.control, "cont")
        assert len(loss) == 1 and loss[0]["corrective_action"] == "reboot"
        await poll("the VM enabled again", lambda: heartbeat().get("state") == "enabled")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


# Keep this one last: it ends the module's VM.
async def test_vm_killed_reports_channel_lost(harness: Harness) -> None:
    """QEMU dies (VM crash / destroy): its end of the chardev socket closes."""
    await harness.steady()
    proc = harness.vm.proc
    assert proc is not None
    t0 = time.monotonic()
    proc.kill()
    await asyncio.to_thread(proc.wait)
    fault = (await harness.until("channel_lost", lambda: harness.faults("channel_lost"),
                                 agent_alive=False))[0]
    print(f"\n[qemu] QEMU SIGKILLed -> channel_lost detected: "
          f"{(fault['detected_mono'] - t0) * 1000:.1f} ms")
    assert [f["kind"] for f in harness.faults()] == ["channel_lost"]
