"""A tiny real VM under QEMU (TCG) for system tests: see docs/qemu-test-vm.md.

    with QemuVM(workdir, interval_ms=500) as vm:   # boots, waits for the guest
        vm.heartbeat_socket   # QEMU's chardev socket of port cgcs.heartbeat
        vm.control("unhealthy")                    # steer the guest

QEMU runs as a direct child of the test process and is killed and reaped on
exit (a daemon left to PID 1 lingers as a zombie here, INTERFACES §9).
"""
from __future__ import annotations

import importlib.util
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

REPO = Path(__file__).resolve().parent.parent
QEMU = "qemu-system-x86_64"


def _builder() -> ModuleType:
    # scripts/ is not a package; load the builder by path.
    name = "nfvha_build_test_vm"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "build_test_vm.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class VMError(RuntimeError):
    """The VM did not do what the test asked; the message ends with its console."""


class QemuVM:
    def __init__(self, workdir: Path | None = None, *, instance_uuid: str | None = None,
                 interval_ms: int = 1000, agent_args: list[str] | None = None,
                 memory_mb: int = 256, boot_timeout_s: float = 60.0,
                 extra_ports: dict[str, str] | None = None,
                 name: str | None = None) -> None:
        """``extra_ports``: more virtio-serial ports, port name -> socket file name
        in the work directory (e.g. {"cgcs.messaging": "cgcs.messaging.vm-1.sock"});
        they appear in the guest as /dev/virtio-ports/NAME. ``name``: the
        instance name QEMU is given, as libvirt gives it (``-name guest=NAME,...``);
        QEMU always gets ``-uuid`` too."""
        # AF_UNIX paths are limited to 107 bytes: keep the directory short.
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nfvha-vm-"))
        self._own_workdir = workdir is None
        self.instance_uuid = instance_uuid or str(uuidlib.uuid4())
        self.name = name
        self.hostname = f"vm-{self.instance_uuid[:8]}"  # the guest's; the agent registers it
        b = _builder()
        self.agent_args = agent_args if agent_args is not None else [
            "--device", f"/dev/virtio-ports/{b.HEARTBEAT_PORT}", "--interval-ms", str(interval_ms),
            "--probe", "file:/run/nfvha/healthy"]
        self.memory_mb = memory_mb
        self.boot_timeout_s = boot_timeout_s
        # The compute agent finds this by its name pattern; the control socket
        # lives one directory down so that no scan ever picks it up.
        self.heartbeat_socket = self.workdir / f"cgcs.heartbeat.{self.instance_uuid}.sock"
        self.control_socket = self.workdir / "control" / "ctl.sock"
        self.extra_ports = {name: self.workdir / f for name, f in (extra_ports or {}).items()}
        self.console_log = self.workdir / "console.log"
        self.image: object | None = None  # build_test_vm.TestVM: kernel, initrd, python...
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._ctl_buf = b""
        self.boot_s: float | None = None  # QEMU start -> control port answers

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> QemuVM:
        b = _builder()
        vm = self.image = b.build()
        self.control_socket.parent.mkdir(parents=True, exist_ok=True)
        initrd = self.workdir / "initrd.img"
        # base + app archives, then this VM's settings: the kernel unpacks all three.
        initrd.write_bytes(vm.initrd.read_bytes() + b.config_cpio(
            self.agent_args, extra_ports=tuple(self.extra_ports), hostname=self.hostname))
        cmd = [
            QEMU, "-accel", "tcg", "-m", str(self.memory_mb), "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", "-serial", f"file:{self.console_log}",
            "-kernel", str(vm.kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=hb,path={self.heartbeat_socket},server=on,wait=off",
            "-device", f"virtserialport,chardev=hb,name={b.HEARTBEAT_PORT}",
            "-chardev", f"socket,id=ctl,path={self.control_socket},server=on,wait=off",
            "-device", f"virtserialport,chardev=ctl,name={b.CONTROL_PORT}",
            "-uuid", self.instance_uuid,
        ]
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
            # Buffered by QEMU until the guest's init opens its end.
            self.control("ping", timeout=max(1.0, t0 + self.boot_timeout_s - time.monotonic()))
            self.boot_s = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        """Kill QEMU and reap it; returns its exit status (None if never started)."""
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
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
    args = ap.parse_args()
    with QemuVM(interval_ms=args.interval_ms) as vm:
        print(f"booted in {vm.boot_s:.2f} s ({vm.image})\n"
              f"heartbeat socket: {vm.heartbeat_socket}\nconsole log: {vm.console_log}\n"
              "commands: ping unhealthy healthy stop cont term kill wait start state ports "
              "echo noecho (empty line quits)")
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
