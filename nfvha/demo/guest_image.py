"""The nfvha guest image: a Debian kernel and one initramfs file with busybox,
the virtio and pvpanic modules, a Python interpreter, the current nfvha guest
agent and (when installed on the host) qemu-ga. Boots in a few seconds under
QEMU (TCG is enough) or libvirt. See docs/qemu-test-vm.md.

    python3 -m nfvha.demo.guest_image              # build (or find in the cache), print paths
    python3 -m nfvha.demo.guest_image --install    # and copy to /var/lib/nfvha/images/
    make guest-image

From code::

    img = build()                  # GuestImage: kernel, initrd (one file), ...
    img = install(img)             # world-readable copies for libvirt's QEMU user
    cmdline = kernel_cmdline(interval_ms=500, corrective_action="stop")
    # libvirt: <os><kernel>img.kernel</kernel><initrd>img.initrd</initrd>
    #          <cmdline>cmdline</cmdline></os>

The initramfs is gzip'd "newc" cpio archives concatenated in one file (the
kernel unpacks each in turn):

- base: busybox, kernel modules, /init, python + the stdlib modules the agent
  imports (found by modulefinder, compiled to sourceless .pyc), qemu-ga and its
  libraries. Slow to build (a few seconds), cached under
  ~/.cache/nfvha-test-vm/ by a hash of its inputs.
- app: nfvha/__init__.py, nfvha/protocol, nfvha/guest from the package this
  module belongs to (a checkout: the working tree). Rebuilt whenever those
  sources change, so a guest always runs current code.

Per-VM settings come from the kernel command line (``nfvha.*``, see
kernel_cmdline) or from a small third archive appended per VM (config_cpio).

Nothing here needs root (but install() into /var/lib): the cpio writer is
ours, so /dev/console can be a device node without mknod. Standard library
only.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# Any edit of this file invalidates every cached image.
BUILDER_SOURCE = Path(__file__).read_bytes()
# The directory holding nfvha/: a checkout, or site-packages.
SRC_ROOT = Path(__file__).resolve().parents[2]
# Where install() puts kernel and initrd: readable by libvirt's QEMU user.
INSTALL_DIR = Path("/var/lib/nfvha/images")
# Modules the guest needs, by name; dependencies come from modules.dep.
KERNEL_MODULES = ("virtio_pci", "virtio_console")
# pvpanic: the panic notifier tells the host (QEMU GUEST_PANICKED, libvirt
# CRASHED/PANICKED). pvpanic_mmio drives the ISA device (ACPI QEMU0001,
# libvirt <panic model='isa'/>), pvpanic_pci the PCI one (model='pvpanic').
# Left out, not an error, for a kernel without them.
# i6300esb: the watchdog libvirt's <watchdog model='i6300esb'/> gives (QEMU's
# WATCHDOG event); Debian's cloud kernel has no driver for it, its generic
# kernel has (watchdog_kernel()).
OPTIONAL_MODULES = ("pvpanic_mmio", "pvpanic_pci", "i6300esb")
QEMU_GA = "/usr/sbin/qemu-ga"
# The agent's own sources, copied into the image.
APP_PATHS = ("nfvha/__init__.py", "nfvha/protocol", "nfvha/guest")
# Imported at interpreter start-up or by `-m`, so not visible to modulefinder.
STARTUP_MODULES = ("encodings", "encodings.aliases", "encodings.utf_8", "encodings.ascii",
                   "encodings.latin_1", "site", "runpy", "os", "stat", "posixpath",
                   "genericpath", "_collections_abc", "_sitebuiltins", "codecs", "io", "abc")
# Never needed by an agent, but reachable through imports modulefinder cannot
# rule out (pydoc via help(), doctest, tests): left out to keep the image small.
EXCLUDED_MODULES = ("pydoc", "pydoc_data", "doctest", "test", "unittest", "_pydecimal", "pdb",
                    "tkinter", "idlelib", "lib2to3", "ensurepip", "distutils", "_testcapi",
                    "turtle", "turtledemo")
# The port the test uses to steer the guest (see INIT below).
CONTROL_PORT = "nfvha.test.control"
HEARTBEAT_PORT = "cgcs.heartbeat"
QGA_PORT = "org.qemu.guest_agent.0"
# /init's own kernel parameters; every other nfvha.KEY[=VALUE] becomes --KEY [VALUE].
INIT_PARAMS = ("hostname", "autostart", "wait_ports", "qga", "qga_port")
CMDLINE_MAX = 2048  # x86 COMMAND_LINE_SIZE

# /init, run by the kernel as PID 1 (busybox ash).
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /run/nfvha /run/qga /tmp /dev/virtio-ports
log() { echo "NFVHA-VM: $*" > /dev/console; }
for m in $(cat /etc/nfvha-modules); do insmod "/lib/modules/$m" || log "insmod $m failed"; done
# For the control port's "panic" (root may always write sysrq-trigger; say it anyway).
echo 1 > /proc/sys/kernel/sysrq
# Settings: these defaults < /etc/nfvha-vm.env (a per-VM cpio appended to the
# initrd, config_cpio) < the kernel command line (nfvha.*, kernel_cmdline).
NFVHA_AGENT_ARGS="--device /dev/virtio-ports/__HEARTBEAT__ --interval-ms 1000"
NFVHA_AGENT_ARGS="$NFVHA_AGENT_ARGS --probe file:/run/nfvha/healthy"
NFVHA_AUTOSTART=1
NFVHA_PORTS="__CONTROL__ __HEARTBEAT__"
NFVHA_HOSTNAME=
NFVHA_QGA=1
NFVHA_QGA_PORT=__QGA__
[ -f /etc/nfvha-vm.env ] && . /etc/nfvha-vm.env
# nfvha.KEY=VALUE: /init's own keys, else the agent's --KEY VALUE (appended, so
# they win over the defaults). One word a line in $EXTRA; never eval'd.
EXTRA=/run/nfvha/cmdline-args
: > $EXTRA
set -f
for w in $(cat /proc/cmdline); do
  case "$w" in
    nfvha.hostname=*) NFVHA_HOSTNAME=${w#*=} ;;
    nfvha.autostart=*) NFVHA_AUTOSTART=${w#*=} ;;
    nfvha.wait_ports=*) NFVHA_PORTS=$(echo "${w#*=}" | tr , ' ') ;;
    nfvha.qga=*) NFVHA_QGA=${w#*=} ;;
    nfvha.qga_port=*) NFVHA_QGA_PORT=${w#*=} ;;
    nfvha.*)
      k=${w%%=*}; k=${k#nfvha.}
      case "$k" in
        ''|*[!a-z0-9_-]*) log "ignored kernel parameter $w" ;;
        *) echo "--$(echo "$k" | tr _ -)" >> $EXTRA
           [ "$k" != "${w#nfvha.}" ] && echo "${w#*=}" >> $EXTRA ;;
      esac ;;
  esac
done
set +f
if [ -z "$NFVHA_HOSTNAME" ]; then
  # One image for many domains: name each after its SMBIOS uuid (libvirt's domain uuid).
  u=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)
  NFVHA_HOSTNAME=nfvha-vm
  [ -n "$u" ] && NFVHA_HOSTNAME="vm-$(echo "$u" | cut -c1-8)"
fi
hostname "$NFVHA_HOSTNAME"
# No udev: name the ports ourselves (again at every "ports" command: ports
# may be hot-plugged). A link whose port went away is removed.
link_ports() {
  for d in /sys/class/virtio-ports/*; do
    [ -e "$d/name" ] || continue
    n=$(cat "$d/name")
    [ -n "$n" ] && ln -sfn "/dev/${d##*/}" "/dev/virtio-ports/$n"
  done
  for l in /dev/virtio-ports/*; do
    [ -L "$l" ] && [ ! -e "$l" ] && rm -f "$l"
  done
}
# Ports appear shortly after the driver binds (QEMU announces them). Wait for
# the expected ones, but briefly: one missing now may be hot-plugged later
# (the agent looks for its port by itself).
i=0
while :; do
  link_ports
  all=1
  for n in $NFVHA_PORTS; do [ -e "/dev/virtio-ports/$n" ] || all=0; done
  [ $all = 1 ] && break
  [ $i -ge 30 ] && { log "still missing after 3 s, going on: $NFVHA_PORTS"; break; }
  i=$((i+1)); sleep 0.1
done
log "ports: $(ls /dev/virtio-ports | tr '\n' ' ')"
touch /run/nfvha/healthy
pstate() {
  [ -n "$1" ] && sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null
}
# Until process $1 has exited, at most $2 tenths of a second; reaps it (we are
# PID 1) and prints its last state (Z or gone when it exited).
wait_gone() {
  j=0
  while :; do
    s=$(pstate "$1")
    case "${s:-gone}" in Z|gone) break ;; esac
    [ $j -ge "$2" ] && break
    j=$((j+1)); sleep 0.1
  done
  case "${s:-gone}" in Z) wait "$1" 2>/dev/null ;; esac
  echo "${s:-gone}"
}
AGENT=
start_agent() {
  cd /
  eval "set -- $NFVHA_AGENT_ARGS"
  while IFS= read -r a; do set -- "$@" "$a"; done < $EXTRA
  # Started directly with & (no subshell), so $! is Python's own pid and
  # kill -STOP really freezes the agent.
  PYTHONHOME=__PYHOME__ PYTHONDONTWRITEBYTECODE=1 __PYTHON__ -m nfvha.guest "$@" \
    > /dev/console 2>&1 &
  AGENT=$!
  log "agent started pid=$AGENT args=$*"
}
QGA=
start_qga() {
  [ "$NFVHA_QGA" = 1 ] && [ -x /usr/sbin/qemu-ga ] || return 0
  [ -e "/dev/virtio-ports/$NFVHA_QGA_PORT" ] || return 0
  /usr/sbin/qemu-ga -m virtio-serial -p "/dev/virtio-ports/$NFVHA_QGA_PORT" -t /run/qga \
    -f /run/qga/qemu-ga.pid > /dev/console 2>&1 &
  QGA=$!
  log "qemu-ga started pid=$QGA"
}
# A watchdog feeder (busybox watchdog) on /dev/watchdog: "wdog T,P" (re)starts
# it with timeout T s and a keepalive every P ms. Stopped with SIGTERM it
# writes the magic 'V' before closing, so the device is disarmed, not fired.
WDOG=
stop_wdog() {
  [ -n "$WDOG" ] || return 0
  kill -TERM "$WDOG" 2>/dev/null; kill -CONT "$WDOG" 2>/dev/null
  wait_gone "$WDOG" 20 > /dev/null
  WDOG=
}
start_wdog() {
  stop_wdog
  watchdog -F -T "$1" -t "${2}ms" /dev/watchdog > /dev/console 2>&1 &
  WDOG=$!
}
# reboot | poweroff, cleanly: the agent gets SIGTERM and sends exit (the host
# disables the instance, no alarm); then the kernel reboots or powers off.
shut() {
  [ -n "$AGENT" ] && { kill -TERM "$AGENT"; kill -CONT "$AGENT"; } 2>/dev/null
  [ -n "$QGA" ] && kill -TERM "$QGA" 2>/dev/null
  stop_wdog
  log "$1: agent $(wait_gone "$AGENT" 50), qemu-ga $(wait_gone "$QGA" 20)"
  sync
  "$1" -f
}
[ "$NFVHA_AUTOSTART" = 1 ] && start_agent
start_qga
log "ready"
# Control loop: one command per line on the control port, one answer per line.
# A read with no host connected returns EOF at once, hence the sleep. The port
# may be missing (a libvirt domain without it) or come later.
while :; do
  until [ -c /dev/virtio-ports/__CONTROL__ ]; do sleep 1; link_ports; done
  command exec 3<>/dev/virtio-ports/__CONTROL__ || { sleep 1; continue; }
  while :; do
    if ! read -r cmd arg <&3; then
      [ -e /dev/virtio-ports/__CONTROL__ ] || break
      sleep 0.1; continue
    fi
    case "$cmd" in
      ping) echo "ok ping" >&3 ;;
      unhealthy) rm -f /run/nfvha/healthy; echo "ok unhealthy" >&3 ;;
      healthy) touch /run/nfvha/healthy; echo "ok healthy" >&3 ;;
      stop) kill -STOP "$AGENT"; echo "ok stop" >&3 ;;
      # A hang of everything in the guest that answers the host (the agent,
      # qemu-ga, the watchdog feeder) at one instant: one kill, the signals
      # microseconds apart; no subshell first (a fork is slow under TCG).
      freeze) kill -STOP $AGENT $QGA $WDOG 2>/dev/null
              echo "ok freeze $AGENT $QGA $WDOG" >&3 ;;
      thaw) kill -CONT $AGENT $QGA $WDOG 2>/dev/null
            echo "ok thaw $AGENT $QGA $WDOG" >&3 ;;
      wdog) t=${arg%%,*}; p=${arg#*,}
            case "$arg" in *,*) ;; *) t= ;; esac
            case "$t:$p" in :*|*:|*[!0-9:]*)
              echo "err wdog wants T,P (s,ms): $arg" >&3; continue ;; esac
            if [ ! -c /dev/watchdog ]; then echo "err no /dev/watchdog" >&3; continue; fi
            start_wdog "$t" "$p"; echo "ok wdog $WDOG" >&3 ;;
      nowdog) stop_wdog; echo "ok nowdog" >&3 ;;
      cont) kill -CONT "$AGENT"; echo "ok cont" >&3 ;;
      term) kill -TERM "$AGENT"; echo "ok term" >&3 ;;
      kill) kill -KILL "$AGENT"; echo "ok kill" >&3 ;;
      start) [ -n "$arg" ] && { NFVHA_AGENT_ARGS="$arg"; : > $EXTRA; }
             start_agent; echo "ok start $AGENT" >&3 ;;
      wait) echo "ok wait $(wait_gone "$AGENT" 100)" >&3 ;;  # after term/kill, <= 10 s
      state) s=$(pstate "$AGENT"); echo "ok state ${s:-gone}" >&3 ;;
      echo) # A byte-for-byte echo on the heartbeat port (agent stopped first):
            # the round trip of virtio-serial itself, without Python. cat ends at
            # EOF (no host connected yet), so it is restarted until "noecho".
            # Not there: say so (<> would create a plain file; a failed exec end PID 1).
            if [ ! -c /dev/virtio-ports/__HEARTBEAT__ ] ||
               ! command exec 4<>/dev/virtio-ports/__HEARTBEAT__; then
              echo "err no port __HEARTBEAT__" >&3; continue
            fi
            rm -f /tmp/noecho
            ( while [ ! -e /tmp/noecho ]; do
                cat <&4 >&4 & echo $! > /tmp/echo.pid; wait $!; usleep 20000; done ) &
            ECHO=$!
            exec 4>&-
            echo "ok echo $ECHO" >&3 ;;
      noecho) touch /tmp/noecho; kill "$(cat /tmp/echo.pid)"; wait "$ECHO"
              echo "ok noecho" >&3 ;;
      ports) link_ports; echo "ok ports $(ls /dev/virtio-ports | tr '\n' ' ')" >&3 ;;
      bootid) echo "ok bootid $(cat /proc/sys/kernel/random/boot_id)" >&3 ;;
      qga) [ -z "$(pstate "$QGA")" ] && { link_ports; start_qga; }
           s=$(pstate "$QGA"); echo "ok qga ${s:-none}" >&3 ;;
      reboot|poweroff) echo "ok $cmd" >&3; shut "$cmd" ;;
      panic) echo "ok panic" >&3
             sleep 0.5  # let the answer leave before the kernel stops
             log "panic (sysrq c)"
             echo c > /proc/sysrq-trigger ;;
      *) echo "err unknown $cmd" >&3 ;;
    esac
  done
  exec 3>&-
done
"""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path  # one file: base + app archives; per-VM settings on the command line
    python: str
    python_version: str
    kernel_release: str
    initrd_bytes: int
    qemu_ga: bool  # qemu-ga is in the image (started when its port is there)
    pvpanic: bool  # a pvpanic driver is in the image
    watchdog: bool = False  # the i6300esb driver is in the image (control "wdog T,P")

    def cmdline(self, **config: object) -> str:
        """kernel_cmdline(**config)."""
        return kernel_cmdline(**config)  # type: ignore[arg-type]


TestVM = GuestImage  # the name tests/ used before the builder moved here


# ---------------------------------------------------------------- cpio (newc)

class Cpio:
    """Writer of the 'newc' cpio format the kernel unpacks."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.lstrip("/")
        if name in self.seen:
            return
        self.seen.add(name)
        raw = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(hdr + raw + b"\0" * (-(len(hdr) + len(raw)) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def _parent(self, name: str) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._parent(name)
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._parent(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._parent(name)
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def gzipped(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        # mtime=0: the same inputs give the same bytes.
        return gzip.compress(self.buf.getvalue(), compresslevel=6, mtime=0)


# ---------------------------------------------------------------- inputs

def find_kernel() -> tuple[Path, Path]:
    """The newest /boot/vmlinuz-* that has its modules with virtio_console."""
    override = os.environ.get("NFVHA_TEST_VM_KERNEL")
    candidates = [Path(override)] if override else sorted(Path("/boot").glob("vmlinuz-*"),
                                                            reverse=True)
    for k in candidates:
        release = k.name[len("vmlinuz-"):]
        mods = Path("/lib/modules") / release
        if (mods / "modules.dep").exists() and os.access(k, os.R_OK):
            return k, mods
    raise SystemExit("no readable /boot/vmlinuz-* with /lib/modules/<release>/modules.dep: "
                     "install linux-image-cloud-amd64 (apt-get install linux-image-cloud-amd64)")


def watchdog_kernel(cache: Path | None = None) -> tuple[Path, Path]:
    """A kernel with the i6300esb watchdog driver: (vmlinuz, modules dir).

    One in /boot when the host has it; else Debian's generic kernel of the
    same version as the host's cloud kernel (the cloud flavour leaves the
    driver out), fetched with ``apt-get download`` and unpacked (dpkg-deb,
    depmod) under the cache, not installed. Raises SystemExit naming what
    failed."""
    for k in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        mods = Path("/lib/modules") / k.name[len("vmlinuz-"):]
        dep = mods / "modules.dep"
        if dep.exists() and "/i6300esb.ko" in dep.read_text() and os.access(k, os.R_OK):
            return k, mods
    cloud = find_kernel()[1].name
    release = cloud.replace("-cloud-", "-")
    if release == cloud:
        raise SystemExit(f"kernel {cloud} has no i6300esb driver and is not a Debian cloud "
                         "kernel: install a kernel with CONFIG_I6300ESB_WDT")
    root = (cache or cache_dir()) / "kernels" / release
    vmlinuz, mods = root / "boot" / f"vmlinuz-{release}", root / "lib" / "modules" / release
    if vmlinuz.exists() and (mods / "modules.dep").exists():
        return vmlinuz, mods
    package = f"linux-image-{release}"
    staging = root.with_name(f".{release}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for cmd in (["apt-get", "download", package], None, ["depmod", "-b", "x", release]):
            if cmd is None:
                debs = list(staging.glob("*.deb"))
                if not debs:
                    raise SystemExit(f"apt-get download {package}: no package file")
                cmd = ["dpkg-deb", "-x", str(debs[0]), "x"]
            res = subprocess.run(cmd, cwd=staging, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.strip()[-500:]}")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(staging / "x", root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (mods / "modules.dep").exists() or "/i6300esb.ko" not in \
            (mods / "modules.dep").read_text():
        raise SystemExit(f"{package} has no i6300esb driver")
    return vmlinuz, mods


def module_load_order(mods: Path, wanted: tuple[str, ...],
                      optional: tuple[str, ...] = ()) -> list[str]:
    """Relative .ko paths in an order insmod accepts (dependencies first);
    ``optional`` ones are left out when the kernel has no such module."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (mods / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        base = os.path.basename(path).split(".ko")[0].replace("-", "_")
        by_name[base] = path
    builtin = (mods / "modules.builtin").read_text() if (mods / "modules.builtin").exists() else ""
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for name in wanted + optional:
        if name in by_name:
            visit(by_name[name])
        elif f"/{name}.ko" not in builtin and name not in optional:
            raise SystemExit(f"kernel module {name} neither in modules.dep nor built in")
    return order


def find_python() -> str:
    """A CPython >= 3.8 to run inside the VM; Debian's if present."""
    override = os.environ.get("NFVHA_TEST_VM_PYTHON")
    for p in ([override] if override else ["/usr/bin/python3.11", "/usr/bin/python3",
                                           "/root/.pyenv/versions/3.11.7/bin/python3.11"]):
        if p and os.path.exists(p):
            return os.path.realpath(p)
    raise SystemExit("no python3 for the guest (set NFVHA_TEST_VM_PYTHON)")


def shared_libs(binary: str) -> list[str]:
    """The libraries ``binary`` loads, by the path the host's loader resolves."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def app_files() -> dict[str, bytes]:
    # NFVHA_TEST_VM_SRC: take the agent from another checkout than this one.
    root = Path(os.environ.get("NFVHA_TEST_VM_SRC", SRC_ROOT))
    files: dict[str, bytes] = {}
    for rel in APP_PATHS:
        p = root / rel
        for f in ([p] if p.is_file() else sorted(p.rglob("*.py"))):
            files[str(f.relative_to(root))] = f.read_bytes()
    return files


# Run by the *guest* interpreter: which stdlib files the agent needs, and
# their bytecode compiled by that interpreter (its magic number).
_FINDER = r"""
import json, modulefinder, os, sys, importlib.util, marshal
app_root, out_dir = sys.argv[1], sys.argv[3]
roots, excludes = json.loads(sys.argv[2]), json.loads(sys.argv[4])
mf = modulefinder.ModuleFinder(path=[app_root] + sys.path[1:], excludes=excludes)
for r in roots:
    try:
        mf.import_hook(r)
    except ImportError:
        pass
stdlib = {}
for name, mod in mf.modules.items():
    f = mod.__file__
    if not f or name.split(".")[0] == "nfvha" or "site-packages" in f or "dist-packages" in f:
        continue
    stdlib[name] = f
res = {"prefix": sys.base_prefix, "version": sys.version.split()[0], "files": []}
for name, f in sorted(stdlib.items()):
    if f.endswith(".py"):
        code = compile(open(f, "rb").read(), f, "exec", dont_inherit=True)
        data = importlib.util.MAGIC_NUMBER + b"\0\0\0\0" + b"\0" * 8 + marshal.dumps(code)
        dest = os.path.join(out_dir, str(len(res["files"])))
        open(dest, "wb").write(data)
        res["files"].append([f + "c", dest])
    else:  # extension module (.so)
        res["files"].append([f, f])
print(json.dumps(res))
"""


def stdlib_for_agent(python: str, app: dict[str, bytes], staging: Path) -> dict:
    # modulefinder reads the real tree; write the app there (same bytes).
    appdir = staging / "app"
    for rel, data in app.items():
        (appdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (appdir / rel).write_bytes(data)
    roots = list(STARTUP_MODULES)
    roots += [rel[:-3].replace("/", ".").removesuffix(".__init__") for rel in app]
    out = staging / "pyc"
    out.mkdir()
    res = subprocess.run([python, "-S", "-c", _FINDER, str(appdir), json.dumps(roots), str(out),
                          json.dumps(EXCLUDED_MODULES)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


# ---------------------------------------------------------------- build

def cache_dir() -> Path:
    return Path(os.environ.get("NFVHA_TEST_VM_CACHE", Path.home() / ".cache" / "nfvha-test-vm"))


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _want_qemu_ga(qemu_ga: bool | None) -> bool:
    if qemu_ga is None:  # by default: when the host has it (apt-get install qemu-guest-agent)
        qemu_ga = os.environ.get("NFVHA_TEST_VM_QGA", "1") != "0"
        return qemu_ga and os.access(QEMU_GA, os.X_OK)
    if qemu_ga and not os.access(QEMU_GA, os.X_OK):
        raise SystemExit(f"{QEMU_GA} not found: apt-get install qemu-guest-agent")
    return qemu_ga


def build(cache: Path | None = None, verbose: bool = False, *,
          qemu_ga: bool | None = None, kernel: tuple[Path, Path] | None = None) -> GuestImage:
    """Builds the image, or finds it in the cache; returns its kernel and its
    initrd (one file, no per-VM settings: give those on the kernel command
    line). ``qemu_ga``: put qemu-ga in (None: when the host has it).
    ``kernel``: (vmlinuz, its /lib/modules/<release> directory), default
    find_kernel()'s; watchdog_kernel() gives one with the i6300esb driver."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    kernel, mods = kernel or find_kernel()
    python = find_python()
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise SystemExit("busybox not found: apt-get install busybox-static")
    with_qga = _want_qemu_ga(qemu_ga)
    app = app_files()
    app_key = _digest(BUILDER_SOURCE, json.dumps(sorted(app)).encode(), *app.values())

    app_img = cache / f"app-{app_key}.cpio.gz"
    # The interpreter's identity (path, size, mtime): an upgraded python means new bytecode.
    py_stat = os.stat(python)
    py_key = _digest(f"{python}:{py_stat.st_size}:{py_stat.st_mtime_ns}".encode())
    manifest_path = cache / f"stdlib-{app_key}-{py_key}.json"
    if not app_img.exists() or not manifest_path.exists():
        staging = cache / f"staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            found = stdlib_for_agent(python, app, staging)
            # Keep the compiled bytecode's content in the manifest's key.
            files = []
            for target, src in found["files"]:
                files.append([target, hashlib.sha256(Path(src).read_bytes()).hexdigest(), src])
            cpio = Cpio()
            for rel, data in app.items():
                cpio.file("/" + rel, data)
            _atomic_write(app_img, cpio.gzipped())
            # Park the .pyc blobs in the cache, by content, for the base build.
            blobs = cache / "pyc"
            blobs.mkdir(exist_ok=True)
            for f in files:
                if f[2].startswith(str(staging)):
                    dest = blobs / f[1]
                    if not dest.exists():
                        shutil.copyfile(f[2], dest)
                    f[2] = str(dest)
            _atomic_write(manifest_path, json.dumps({"prefix": found["prefix"],
                                                     "version": found["version"],
                                                     "files": files}).encode())
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    manifest = json.loads(manifest_path.read_text())

    order = module_load_order(mods, KERNEL_MODULES, OPTIONAL_MODULES)
    init = (INIT.replace("__CONTROL__", CONTROL_PORT).replace("__HEARTBEAT__", HEARTBEAT_PORT)
            .replace("__QGA__", QGA_PORT).replace("__PYTHON__", python)
            .replace("__PYHOME__", manifest["prefix"]))
    libs = shared_libs(python)
    binaries = [busybox, python, *libs]
    if with_qga:
        binaries += [QEMU_GA, *shared_libs(QEMU_GA)]
    base_key = _digest(
        BUILDER_SOURCE, init.encode(), str(kernel).encode(),
        *[f"{p}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}".encode()
          for p in [*binaries, *(str(mods / m) for m in order)]],
        json.dumps([f[:2] for f in manifest["files"]]).encode())
    base_img = cache / f"base-{base_key}.cpio.gz"
    if not base_img.exists():
        cpio = Cpio()
        for d in ("/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/bin"):
            cpio.dir(d)
        cpio.chardev("/dev/console", 5, 1)  # init's stdio before devtmpfs is mounted
        cpio.chardev("/dev/null", 1, 3)
        cpio.file("/bin/busybox", Path(busybox).read_bytes(), 0o755)
        cpio.file("/init", init.encode(), 0o755)
        cpio.file("/etc/nfvha-modules", "\n".join(order).encode() + b"\n")
        for m in order:
            cpio.file(f"/lib/modules/{m}", (mods / m).read_bytes())
        for binary in binaries[1:]:
            # Same absolute path as on the host, so the loader finds it unchanged.
            cpio.file(binary, Path(binary).read_bytes(), 0o755)
        for target, _digest_hex, src in manifest["files"]:
            cpio.file(target, Path(src).read_bytes())
            for lib in (shared_libs(src) if src.endswith(".so") else []):
                cpio.file(lib, Path(lib).read_bytes(), 0o755)
        _atomic_write(base_img, cpio.gzipped())
        if verbose:
            print(f"built {base_img} ({base_img.stat().st_size} bytes)", file=sys.stderr)

    initrd = cache / f"initrd-{base_key}-{app_key}.img"
    if not initrd.exists():
        _atomic_write(initrd, base_img.read_bytes() + app_img.read_bytes())
    for used in (app_img, manifest_path, base_img, initrd):
        os.utime(used)  # most recently used: kept by _prune
    _prune(cache)
    return GuestImage(kernel=kernel, initrd=initrd, python=python,
                      python_version=manifest["version"], kernel_release=mods.name,
                      initrd_bytes=initrd.stat().st_size, qemu_ga=with_qga,
                      pvpanic=any("pvpanic" in m for m in order),
                      watchdog=any(m.endswith("/i6300esb.ko") for m in order))


def _prune(cache: Path, keep: int = 3) -> None:
    """Each edit of the agent makes a new image: keep the few most recently used."""
    for prefix in ("app-", "stdlib-", "base-", "initrd-"):
        files = sorted(cache.glob(prefix + "*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[keep:]:
            old.unlink(missing_ok=True)
    # Bytecode blobs no kept manifest refers to.
    referenced = set()
    for m in cache.glob("stdlib-*.json"):
        referenced.update(Path(f[2]).name for f in json.loads(m.read_text())["files"])
    for blob in (cache / "pyc").glob("*"):
        if blob.name not in referenced:
            blob.unlink(missing_ok=True)


# ---------------------------------------------------------------- per-VM settings

def _word(key: str, value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"'" for c in text):
        raise ValueError(f"nfvha.{key}: {text!r} must be one word without quotes")
    return f"nfvha.{key}={text}"


def kernel_cmdline(*, interval_ms: int | None = None, corrective_action: str | None = None,
                   probes: Sequence[str] = (), hostname: str | None = None,
                   autostart: bool = True, wait_ports: Sequence[str] | None = None,
                   qemu_ga: bool = True, qga_port: str | None = None,
                   agent_options: Mapping[str, object] | None = None,
                   console: str | None = "ttyS0", panic: int = 0, quiet: bool = True,
                   extra: Sequence[str] = ()) -> str:
    """The kernel command line for one VM of the shared image.

    ``nfvha.hostname`` (default: ``vm-`` + the first 8 characters of the
    SMBIOS uuid, i.e. libvirt's domain uuid), ``nfvha.autostart=0|1``,
    ``nfvha.wait_ports=a,b`` (the ports /init waits for at boot, at most 3 s),
    ``nfvha.qga=0|1``, ``nfvha.qga_port=NAME`` (the virtio port qemu-ga
    serves, default org.qemu.guest_agent.0: another name keeps libvirt from
    taking the socket, so a client of ours can) are /init's; any other
    ``nfvha.OPTION[=VALUE]`` is the agent's ``--OPTION [VALUE]`` (``_`` or
    ``-``), after the defaults ``--device /dev/virtio-ports/cgcs.heartbeat
    --interval-ms 1000 --probe file:/run/nfvha/healthy`` so it wins. Values are single words.

    ``panic=0`` by default: a panicked kernel (after pvpanic has told the host)
    hangs until the host acts, rather than rebooting by itself behind
    nfvha's back. ``extra``: more words as they are (``loglevel=7``).
    """
    words = [f"console={console}"] if console else []
    if quiet:
        words.append("quiet")
    words.append(f"panic={int(panic)}")
    words += list(extra)
    if hostname is not None:
        words.append(_word("hostname", hostname))
    if not autostart:
        words.append("nfvha.autostart=0")
    if wait_ports is not None:
        words.append(_word("wait_ports", ",".join(wait_ports)) if wait_ports
                     else "nfvha.wait_ports=")
    if not qemu_ga:
        words.append("nfvha.qga=0")
    if qga_port is not None:
        words.append(_word("qga_port", qga_port))
    options: dict[str, object] = {}
    if interval_ms is not None:
        options["interval_ms"] = int(interval_ms)
    if corrective_action is not None:
        options["corrective_action"] = corrective_action
    options.update(agent_options or {})
    for key, value in options.items():
        key = key.replace("-", "_")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", key) or key in INIT_PARAMS:
            raise ValueError(f"not an agent option for the kernel command line: {key!r}")
        if value is True:
            words.append(f"nfvha.{key}")
        elif value is not False and value is not None:
            words.append(_word(key, value))
    words += [_word("probe", p) for p in probes]
    line = " ".join(words)
    if len(line) >= CMDLINE_MAX:
        raise ValueError(f"kernel command line too long ({len(line)} >= {CMDLINE_MAX})")
    return line


def config_cpio(agent_args: list[str] | None = None, autostart: bool = True,
                extra_ports: tuple[str, ...] = (), hostname: str = "nfvha-test-vm",
                wait_ports: tuple[str, ...] | None = None) -> bytes:
    """A third, per-VM archive (append it to the initrd): the agent's arguments
    and the ports /init waits for (``wait_ports``; default the control and
    heartbeat ports and ``extra_ports``).

    ``agent_args`` replace the default ``--device ... --interval-ms 1000
    --probe file:/run/nfvha/healthy`` entirely. The kernel command line's
    ``nfvha.*`` still apply on top."""
    ports = " ".join(wait_ports if wait_ports is not None
                     else (CONTROL_PORT, HEARTBEAT_PORT, *extra_ports))
    lines = [f"NFVHA_AUTOSTART={1 if autostart else 0}", f"NFVHA_PORTS={shlex.quote(ports)}",
             f"NFVHA_HOSTNAME={shlex.quote(hostname)}"]
    if agent_args is not None:
        lines.append("NFVHA_AGENT_ARGS=" + shlex.quote(shlex.join(agent_args)))
    cpio = Cpio()
    cpio.file("/etc/nfvha-vm.env", ("\n".join(lines) + "\n").encode())
    return cpio.gzipped()


def initrd_with_config(image: GuestImage, dest: Path, **config: object) -> Path:
    """``dest``: the image's initrd with a per-VM config_cpio(**config) appended,
    one file (for a VM whose kernel command line cannot be set)."""
    _atomic_write(Path(dest), image.initrd.read_bytes() + config_cpio(**config))  # type: ignore[arg-type]
    return Path(dest)


# ---------------------------------------------------------------- install for libvirt

def install(image: GuestImage, dest: Path = INSTALL_DIR, keep: int = 5, *,
            links: bool = True) -> GuestImage:
    """Copies kernel and initrd to ``dest`` (default /var/lib/nfvha/images/),
    mode 0644 in 0755 directories, so libvirt's QEMU user (libvirt-qemu) can
    read them; returns the image with those paths. Files are named by content
    (a running domain keeps its own), and ``nfvha-guest.vmlinuz`` /
    ``nfvha-guest.initrd`` link to the newest; older initrds beyond ``keep``
    are removed. ``links`` False leaves those two links as they are (an
    image for one benchmark, not the default one). Raises PermissionError
    naming a directory on the way that others cannot enter."""
    dest = Path(dest)
    created = [p for p in (dest, *dest.parents) if not p.exists()]
    dest.mkdir(parents=True, exist_ok=True)
    for d in created:
        d.chmod(0o755)
    blocked = [p for p in (dest, *dest.parents) if not p.stat().st_mode & stat.S_IXOTH]
    if blocked:
        raise PermissionError(f"libvirt's QEMU user cannot enter {blocked[0]} "
                              f"(mode {stat.filemode(blocked[0].stat().st_mode)})")
    kernel = dest / image.kernel.name
    initrd = dest / f"nfvha-guest-{image.initrd.name}"
    for src, dst in ((image.kernel, kernel), (image.initrd, initrd)):
        if not dst.exists() or dst.stat().st_size != src.stat().st_size or \
                dst.read_bytes() != src.read_bytes():
            _atomic_write(dst, src.read_bytes())
        dst.chmod(0o644)
        os.utime(dst)
    for link, target in ((("nfvha-guest.vmlinuz", kernel), ("nfvha-guest.initrd", initrd))
                         if links else ()):
        tmp = dest / f".{link}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.name)
        os.replace(tmp, dest / link)
    old = sorted(dest.glob("nfvha-guest-initrd-*.img"), key=lambda p: p.stat().st_mtime,
                 reverse=True)
    for f in old[keep:]:
        f.unlink(missing_ok=True)
    return replace(image, kernel=kernel, initrd=initrd)


def _atomic_write(path: Path, data: bytes) -> None:
    # Several test runs may build at once: never let one read a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nfvha.demo.guest_image",
                                 description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object")
    ap.add_argument("--cache", type=Path, help="cache directory (default ~/.cache/nfvha-test-vm)")
    ap.add_argument("--install", nargs="?", type=Path, const=INSTALL_DIR, metavar="DIR",
                    help=f"copy kernel and initrd where libvirt can read them ({INSTALL_DIR})")
    ap.add_argument("--no-qemu-ga", dest="qemu_ga", action="store_false", default=None,
                    help="leave qemu-ga out")
    args = ap.parse_args(argv)
    img = build(args.cache, verbose=True, qemu_ga=args.qemu_ga)
    if args.install:
        img = install(img, args.install)
    cmdline = kernel_cmdline()
    if args.json:
        print(json.dumps({**{k: str(v) if isinstance(v, Path) else v
                             for k, v in asdict(img).items()}, "cmdline": cmdline}))
    else:
        print(f"kernel={img.kernel}\ninitrd={img.initrd}\n"
              f"size={img.initrd_bytes / 1e6:.1f} MB (initrd, one file)\n"
              f"python={img.python} ({img.python_version})\n"
              f"qemu_ga={'yes' if img.qemu_ga else 'no'}\n"
              f"pvpanic={'yes' if img.pvpanic else 'no'}\n"
              f"cmdline={cmdline}   # add nfvha.interval_ms=N nfvha.corrective_action=A ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
