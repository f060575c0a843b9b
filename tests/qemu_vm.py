"""A tiny real VM under QEMU (TCG) for system tests: see docs/qemu-test-vm.md.

    with QemuVM(workdir, interval_ms=500) as vm:   # boots, waits for the guest
        vm.heartbeat_socket   # QEMU's chardev socket of port cgcs.heartbeat
        vm.control("unhealthy")                    # steer the guest

    QemuVM(config="cmdline", qmp=True, reboot=True, panic_device="isa", ...)
        # the shared initrd with settings on the kernel command line (as under
        # libvirt), a QMP monitor (vm.qmp: hot-plug, events), guest reboots allowed

QEMU runs as a direct child of the test process and is killed and reaped on
exit (a daemon left to PID 1 lingers as a zombie here: this PID 1 reaps late).
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from types import ModuleType
from typing import Any

from nfvha.demo import guest_image

QEMU = "qemu-system-x86_64"
PANIC_DEVICES = {"isa": "pvpanic", "pci": "pvpanic-pci"}  # libvirt <panic model=...>


def _builder() -> ModuleType:
    return guest_image


class VMError(RuntimeError):
    """The VM did not do what the test asked; the message ends with its console."""


class Qmp:
    """A minimal QMP client: commands in order, events kept as they come."""

    def __init__(self, path: Path, why: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self._buf = b""
        self._why = why  # VMError message with the console
        self._id = 0
        self.events: list[dict[str, Any]] = []  # each with "mono": when QEMU sent it
        self._read(10.0)  # the greeting
        self.execute("qmp_capabilities")

    def _read(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise VMError(self._why("QEMU closed the QMP socket"))
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if "event" in msg:
            # When QEMU sent it (its wall-clock stamp), on our monotonic clock.
            ts = msg.get("timestamp", {})
            sent = ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6
            msg["mono"] = time.monotonic() - max(0.0, time.time() - sent)
            self.events.append(msg)
        return msg

    def execute(self, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
        self._id += 1
        req: dict[str, Any] = {"execute": command, "id": self._id}
        if arguments:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise VMError(self._why(f"no QMP answer to {command} in {timeout:.0f} s"))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise VMError(self._why(f"QMP {command}: {msg['error']}"))
                return msg["return"]

    def wait_event(self, name: str, timeout: float = 30.0, after: float = 0.0,
                   **data: Any) -> dict[str, Any]:
        """The first event ``name`` read after monotonic time ``after`` whose data
        has the given items; reads the socket until it comes."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["event"] == name and ev["mono"] >= after and all(
                        ev.get("data", {}).get(k) == v for k, v in data.items()):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError(self._why(f"no QMP event {name} {data or ''} in {timeout:.0f} s; "
                                        f"got {[e['event'] for e in self.events]}"))
            self._read(min(left, 0.5))

    def close(self) -> None:
        self.sock.close()


class QemuVM:
    def __init__(self, workdir: Path | None = None, *, instance_uuid: str | None = None,
                 interval_ms: int = 1000, agent_args: list[str] | None = None,
                 memory_mb: int = 256, boot_timeout_s: float = 60.0,
                 extra_ports: dict[str, str] | None = None,
                 name: str | None = None, corrective_action: str | None = None,
                 config: str = "cpio", heartbeat_port: bool = True, qga_port: bool = False,
                 qmp: bool = False, reboot: bool = False, panic_device: str | None = None,
                 panic_action: str | None = None, kernel_panic: int = -1) -> None:
        """``extra_ports``: more virtio-serial ports, port name -> socket file name
        in the work directory (e.g. {"cgcs.messaging": "cgcs.messaging.vm-1.sock"});
        they appear in the guest as /dev/virtio-ports/NAME. ``name``: the
        instance name QEMU is given, as libvirt gives it (``-name guest=NAME,...``);
        QEMU always gets ``-uuid`` too.

        ``config``: "cpio" appends the VM's settings to a copy of the initrd;
        "cmdline" boots the shared initrd with them on the kernel command line
        (``nfvha.*``, as a libvirt domain does). ``heartbeat_port=False``: no
        cgcs.heartbeat port at boot (hot-plug it: ``plug_heartbeat``).
        ``qga_port``: port org.qemu.guest_agent.0 (socket ``qga_socket``).
        ``qmp``: a QMP monitor, ``self.qmp``. ``reboot``: a guest reboot resets
        the VM (else QEMU exits: ``-no-reboot``). ``panic_device``: "isa" or
        "pci" (pvpanic); ``panic_action``: QEMU's ``-action panic=``.
        ``kernel_panic``: the kernel's ``panic=`` (-1: reboot at once, which with
        -no-reboot ends QEMU; 0: hang)."""
        # AF_UNIX paths are limited to 107 bytes: keep the directory short.
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nfvha-vm-"))
        self._own_workdir = workdir is None
        self.instance_uuid = instance_uuid or str(uuidlib.uuid4())
        self.name = name
        self.hostname = f"vm-{self.instance_uuid[:8]}"  # the guest's; the agent registers it
        b = _builder()
        if config not in ("cpio", "cmdline"):
            raise ValueError(f"config {config!r}: cpio or cmdline")
        if config == "cmdline" and agent_args is not None:
            raise ValueError("agent_args need config='cpio' (the command line adds options)")
        self.config = config
        self.interval_ms = interval_ms
        self.corrective_action = corrective_action
        # What /init starts (for the cmdline config: its defaults, then nfvha.* options).
        self.agent_args = agent_args if agent_args is not None else [
            "--device", f"/dev/virtio-ports/{b.HEARTBEAT_PORT}", "--interval-ms", str(interval_ms),
            "--probe", "file:/run/nfvha/healthy"]
        if corrective_action and agent_args is None:
            self.agent_args += ["--corrective-action", corrective_action]
        self.heartbeat_port = heartbeat_port
        self.reboot = reboot
        self.panic_device = panic_device
        self.panic_action = panic_action
        self.kernel_panic = kernel_panic
        self.memory_mb = memory_mb
        self.boot_timeout_s = boot_timeout_s
        # The compute agent finds this by its name pattern; the control socket
        # lives one directory down so that no scan ever picks it up.
        self.heartbeat_socket = self.workdir / f"cgcs.heartbeat.{self.instance_uuid}.sock"
        self.control_socket = self.workdir / "control" / "ctl.sock"
        self.extra_ports = {name: self.workdir / f for name, f in (extra_ports or {}).items()}
        if qga_port:
            self.extra_ports[b.QGA_PORT] = self.control_socket.parent / "qga.sock"
        self.qga_socket = self.extra_ports.get(b.QGA_PORT)
        self.qmp_socket = self.control_socket.parent / "qmp.sock" if qmp else None
        self.qmp: Qmp | None = None
        self.console_log = self.workdir / "console.log"
        self.image: guest_image.GuestImage | None = None  # kernel, initrd, python...
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._ctl_buf = b""
        self.boot_s: float | None = None  # QEMU start -> control port answers

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> QemuVM:
        b = _builder()
        vm = self.image = b.build()
        self.control_socket.parent.mkdir(parents=True, exist_ok=True)
        ports = [b.CONTROL_PORT, *([b.HEARTBEAT_PORT] if self.heartbeat_port else []),
                 *self.extra_ports]
        if self.config == "cpio":
            # base + app archives, then this VM's settings: the kernel unpacks all three.
            initrd = b.initrd_with_config(vm, self.workdir / "initrd.img",
                                          agent_args=self.agent_args, hostname=self.hostname,
                                          wait_ports=tuple(ports))
            append = f"console=ttyS0 quiet panic={self.kernel_panic}"
        else:
            initrd = vm.initrd  # shared, as by every libvirt domain
            # No nfvha.hostname: /init names the guest after its SMBIOS uuid (-uuid),
            # vm-<first 8>, which is self.hostname.
            append = b.kernel_cmdline(interval_ms=self.interval_ms,
                                      corrective_action=self.corrective_action,
                                      wait_ports=ports, panic=self.kernel_panic)
        cmd = [
            QEMU, "-accel", "tcg", "-m", str(self.memory_mb), "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", f"file:{self.console_log}",
            "-kernel", str(vm.kernel), "-initrd", str(initrd), "-append", append,
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=ctl,path={self.control_socket},server=on,wait=off",
            "-device", f"virtserialport,chardev=ctl,name={b.CONTROL_PORT}",
            "-uuid", self.instance_uuid,
        ]
        if self.heartbeat_port:
            cmd += ["-chardev", f"socket,id=hb,path={self.heartbeat_socket},server=on,wait=off",
                    "-device", f"virtserialport,chardev=hb,name={b.HEARTBEAT_PORT},id=hbport"]
        if not self.reboot:
            cmd.append("-no-reboot")
        if self.panic_device:
            cmd += ["-device", PANIC_DEVICES[self.panic_device]]
        if self.panic_action:
            cmd += ["-action", f"panic={self.panic_action}"]
        if self.qmp_socket:
            cmd += ["-qmp", f"unix:{self.qmp_socket},server=on,wait=off"]
        if self.name:
            cmd += ["-name", f"guest={self.name},debug-threads=on"]
        for i, (name, path) in enumerate(self.extra_ports.items()):
            cmd += ["-chardev", f"socket,id=x{i},path={path},server=on,wait=off",
                    "-device", f"virtserialport,chardev=x{i},name={name}"]
        t0 = time.monotonic()
        # QEMU's own messages go to a file: a pipe nobody reads could block it.
        with open(self.workdir / "qemu.log", "wb") as qlog:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        try:
            self._connect_control(t0 + 10.0)
            if self.qmp_socket:
                self.qmp = Qmp(self.qmp_socket, self._why)
            self.boot_s = self.wait_booted(t0)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_booted(self, t0: float | None = None) -> float:
        """Until the guest's /init answers; returns the seconds since ``t0``
        (default: now). Commands sent while the guest has the port closed are
        buffered by QEMU until its init opens it."""
        t0 = time.monotonic() if t0 is None else t0
        self.control("ping", timeout=max(1.0, t0 + self.boot_timeout_s - time.monotonic()))
        return time.monotonic() - t0

    def wait_rebooted(self, since: float, reason: str = "guest-reset") -> float:
        """After the guest rebooted (QMP RESET after monotonic ``since``): until
        it answers again; returns the seconds from the reset to that."""
        assert self.qmp is not None, "needs qmp=True"
        reset = self.qmp.wait_event("RESET", timeout=60, after=since, reason=reason)
        self.wait_booted(reset["mono"])
        return time.monotonic() - reset["mono"]

    # -- hot-plug (QMP) ------------------------------------------------------------------------
    def plug_heartbeat(self) -> None:
        """Adds port cgcs.heartbeat to the running VM (its chardev socket first,
        once); the host side appears at ``heartbeat_socket``."""
        assert self.qmp is not None, "needs qmp=True"
        if not any(c["label"] == "hb" for c in self.qmp.execute("query-chardev")):
            self.qmp.execute("chardev-add", id="hb", backend={"type": "socket", "data": {
                "addr": {"type": "unix", "data": {"path": str(self.heartbeat_socket)}},
                "server": True, "wait": False}})
        self.qmp.execute("device_add", driver="virtserialport", bus="vser0.0", chardev="hb",
                         name=_builder().HEARTBEAT_PORT, id="hbport")

    def unplug_heartbeat(self, timeout: float = 30.0) -> None:
        """Removes the port (its chardev stays, so the host's connection does)."""
        assert self.qmp is not None, "needs qmp=True"
        t0 = time.monotonic()
        self.qmp.execute("device_del", id="hbport")
        self.qmp.wait_event("DEVICE_DELETED", timeout=timeout, after=t0, device="hbport")

    def stop(self) -> int | None:
        """Kill QEMU and reap it; returns its exit status (None if never started)."""
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self) -> QemuVM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the guest's control port ------------------------------------------------------------
    def _connect_control(self, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.control_socket))
                self._ctl = s
                return
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise VMError(self._why("QEMU never opened its control socket")) from None
                time.sleep(0.05)

    def control(self, command: str, timeout: float = 15.0) -> str:
        """Send one command line to the guest's /init; return its answer after "ok "."""
        assert self._ctl is not None, "VM not started"
        self._ctl.sendall(command.encode() + b"\n")
        deadline = time.monotonic() + timeout
        while b"\n" not in self._ctl_buf:
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError(self._why(f"no answer to {command!r} in {timeout:.0f} s"))
            self._ctl.settimeout(min(left, 0.5))
            try:
                data = self._ctl.recv(4096)
            except socket.timeout:
                continue
            if not data:
                raise VMError(self._why("QEMU closed the control socket"))
            self._ctl_buf += data
        line, self._ctl_buf = self._ctl_buf.split(b"\n", 1)
        answer = line.decode(errors="replace")
        if not answer.startswith("ok "):
            raise VMError(self._why(f"{command!r} -> {answer!r}"))
        return answer[3:]

    # -- diagnostics ---------------------------------------------------------------------------
    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            out = (self.workdir / "qemu.log").read_text(errors="replace")
            raise VMError(self._why(f"QEMU exited with {self.proc.returncode}: {out.strip()}"))

    def _why(self, what: str) -> str:
        return f"{what}\n--- guest console ---\n{self.console()[-4000:]}"


def kernel_missing() -> str | None:
    """Why no guest kernel can be found, or None when there is one."""
    try:
        _builder().find_kernel()
    except SystemExit as exc:
        return str(exc)
    return None


def require_vm() -> None:
    """Skips (fails in CI) a test when QEMU, busybox or a guest kernel is missing."""
    from conftest import missing, require_command
    require_command(QEMU)
    if shutil.which("busybox") is None:
        missing("busybox is not installed (apt-get install busybox-static)")
    reason = kernel_missing()
    if reason:
        missing(reason)


def main() -> int:
    """Boot a VM by hand and leave it running until Ctrl-C (for poking at it)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--corrective-action", default=None)
    args = ap.parse_args()
    # As under libvirt: shared initrd, settings on the command line, reboots allowed,
    # pvpanic, qemu-ga's port.
    with QemuVM(interval_ms=args.interval_ms, corrective_action=args.corrective_action,
                config="cmdline", reboot=True, panic_device="isa", qga_port=True,
                kernel_panic=0) as vm:
        print(f"booted in {vm.boot_s:.2f} s ({vm.image})\n"
              f"heartbeat socket: {vm.heartbeat_socket}\nqemu-ga socket: {vm.qga_socket}\n"
              f"console log: {vm.console_log}\n"
              "commands: ping unhealthy healthy stop cont term kill wait start state ports "
              "echo noecho bootid qga reboot poweroff panic (empty line quits)")
        try:
            while line := input("> ").strip():
                try:
                    print(vm.control(line))
                except VMError as exc:
                    print(exc)
        except (EOFError, KeyboardInterrupt):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
