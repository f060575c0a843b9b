#!/usr/bin/env python3
"""Build (or find in the cache) a tiny VM for tests: a Debian kernel and an
initramfs with busybox, the virtio modules, a Python interpreter and the
current nfvha guest agent. See docs/qemu-test-vm.md.

    python3 scripts/build_test_vm.py            # prints kernel= and initrd= paths
    python3 scripts/build_test_vm.py --json     # the same as one JSON object

The initramfs is two gzip'd cpio archives, concatenated (the kernel unpacks
each in turn):

- base: busybox, kernel modules, /init, python + the stdlib modules the agent
  imports (found by modulefinder, compiled to sourceless .pyc). Slow to build
  (a few seconds), cached under ~/.cache/nfvha-test-vm/ by a hash of its inputs.
- app: nfvha/__init__.py, nfvha/protocol, nfvha/guest from the working tree.
  Rebuilt whenever those sources change, so a test always runs current code.

Nothing here needs root: the cpio writer is ours, so /dev/console can be a
device node without mknod. Standard library only.
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
from dataclasses import dataclass
from pathlib import Path

# Any edit of this file invalidates every cached image.
BUILDER_SOURCE = Path(__file__).read_bytes()
REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NFVHA_TEST_VM_CACHE", Path.home() / ".cache" / "nfvha-test-vm"))
# Modules the guest needs, by name; dependencies come from modules.dep.
KERNEL_MODULES = ("virtio_pci", "virtio_console")
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

# /init, run by the kernel as PID 1 (busybox ash).
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /run/nfvha /tmp /dev/virtio-ports
log() { echo "NFVHA-VM: $*" > /dev/console; }
for m in $(cat /etc/nfvha-modules); do insmod "/lib/modules/$m" || log "insmod $m failed"; done
# Per-VM settings: a small third cpio written by the test (see config_cpio).
NFVHA_AGENT_ARGS="--device /dev/virtio-ports/__HEARTBEAT__ --interval-ms 1000"
NFVHA_AGENT_ARGS="$NFVHA_AGENT_ARGS --probe file:/run/nfvha/healthy"
NFVHA_AUTOSTART=1
NFVHA_PORTS="__CONTROL__ __HEARTBEAT__"
NFVHA_HOSTNAME=nfvha-test-vm
[ -f /etc/nfvha-vm.env ] && . /etc/nfvha-vm.env
hostname "$NFVHA_HOSTNAME"
# No udev: name the ports ourselves. Ports appear shortly after the driver
# binds (QEMU announces them), so wait for all expected ones, up to ~10 s.
i=0
while [ $i -lt 100 ]; do
  for d in /sys/class/virtio-ports/*; do
    [ -e "$d/name" ] || continue
    n=$(cat "$d/name")
    [ -n "$n" ] && ln -sf "/dev/${d##*/}" "/dev/virtio-ports/$n"
  done
  all=1
  for n in $NFVHA_PORTS; do [ -e "/dev/virtio-ports/$n" ] || all=0; done
  [ $all = 1 ] && break
  i=$((i+1)); sleep 0.1
done
log "ports: $(ls /dev/virtio-ports | tr '\n' ' ')"
touch /run/nfvha/healthy
AGENT=
start_agent() {
  cd /
  eval "set -- $NFVHA_AGENT_ARGS"
  # Started directly with & (no subshell), so $! is Python's own pid and
  # kill -STOP really freezes the agent.
  PYTHONHOME=__PYHOME__ PYTHONDONTWRITEBYTECODE=1 __PYTHON__ -m nfvha.guest "$@" \
    > /dev/console 2>&1 &
  AGENT=$!
  log "agent started pid=$AGENT args=$NFVHA_AGENT_ARGS"
}
[ "$NFVHA_AUTOSTART" = 1 ] && start_agent
log "ready"
# Control loop: one command per line on the control port, one answer per line.
# A read with no host connected returns EOF at once, hence the sleep.
exec 3<>/dev/virtio-ports/__CONTROL__
while true; do
  if ! read -r cmd arg <&3; then sleep 0.1; continue; fi
  case "$cmd" in
    ping) echo "ok ping" >&3 ;;
    unhealthy) rm -f /run/nfvha/healthy; echo "ok unhealthy" >&3 ;;
    healthy) touch /run/nfvha/healthy; echo "ok healthy" >&3 ;;
    stop) kill -STOP "$AGENT"; echo "ok stop" >&3 ;;
    cont) kill -CONT "$AGENT"; echo "ok cont" >&3 ;;
    term) kill -TERM "$AGENT"; echo "ok term" >&3 ;;
    kill) kill -KILL "$AGENT"; echo "ok kill" >&3 ;;
    start) [ -n "$arg" ] && NFVHA_AGENT_ARGS="$arg"
           start_agent; echo "ok start $AGENT" >&3 ;;
    wait) i=0  # until the agent has exited (after term/kill), at most ~10 s
          while [ $i -lt 100 ]; do
            s=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$AGENT/status" 2>/dev/null)
            case "${s:-gone}" in Z|gone) break ;; esac
            i=$((i+1)); sleep 0.1
          done
          wait "$AGENT" 2>/dev/null  # reap it (we are PID 1)
          echo "ok wait ${s:-gone}" >&3 ;;
    state) s=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$AGENT/status" 2>/dev/null)
           echo "ok state ${s:-gone}" >&3 ;;
    echo) # A byte-for-byte echo on the heartbeat port (agent stopped first):
          # the round trip of virtio-serial itself, without Python. cat ends at
          # EOF (no host connected yet), so it is restarted until "noecho".
          rm -f /tmp/noecho
          exec 4<>/dev/virtio-ports/__HEARTBEAT__
          ( while [ ! -e /tmp/noecho ]; do
              cat <&4 >&4 & echo $! > /tmp/echo.pid; wait $!; usleep 20000; done ) &
          ECHO=$!
          exec 4>&-
          echo "ok echo $ECHO" >&3 ;;
    noecho) touch /tmp/noecho; kill "$(cat /tmp/echo.pid)"; wait "$ECHO"
            echo "ok noecho" >&3 ;;
    ports) echo "ok ports $(ls /dev/virtio-ports | tr '\n' ' ')" >&3 ;;
    *) echo "err unknown $cmd" >&3 ;;
  esac
done
"""


@dataclass(frozen=True)
class TestVM:
    kernel: Path
    initrd: Path
    python: str
    python_version: str
    kernel_release: str
    initrd_bytes: int


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


def module_load_order(mods: Path, wanted: tuple[str, ...]) -> list[str]:
    """Relative .ko paths in an order insmod accepts (dependencies first)."""
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

    for name in wanted:
        if name in by_name:
            visit(by_name[name])
        elif f"/{name}.ko" not in builtin:
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
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def app_files() -> dict[str, bytes]:
    # NFVHA_TEST_VM_SRC: take the agent from another checkout than this one.
    root = Path(os.environ.get("NFVHA_TEST_VM_SRC", REPO))
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

def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def build(cache: Path = CACHE, verbose: bool = False) -> TestVM:
    cache.mkdir(parents=True, exist_ok=True)
    kernel, mods = find_kernel()
    python = find_python()
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise SystemExit("busybox not found: apt-get install busybox-static")
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

    order = module_load_order(mods, KERNEL_MODULES)
    init = (INIT.replace("__CONTROL__", CONTROL_PORT).replace("__HEARTBEAT__", HEARTBEAT_PORT)
            .replace("__PYTHON__", python).replace("__PYHOME__", manifest["prefix"]))
    libs = shared_libs(python)
    base_key = _digest(
        BUILDER_SOURCE, init.encode(), str(kernel).encode(),
        *[f"{p}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}".encode()
          for p in [busybox, python, *libs, *(str(mods / m) for m in order)]],
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
        cpio.file(python, Path(python).read_bytes(), 0o755)
        for lib in libs:
            # Same absolute path as on the host, so the loader finds it unchanged.
            cpio.file(lib, Path(lib).read_bytes(), 0o755)
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
    return TestVM(kernel=kernel, initrd=initrd, python=python,
                  python_version=manifest["version"], kernel_release=mods.name,
                  initrd_bytes=initrd.stat().st_size)


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


def config_cpio(agent_args: list[str] | None = None, autostart: bool = True,
                extra_ports: tuple[str, ...] = (), hostname: str = "nfvha-test-vm") -> bytes:
    """A third, per-VM archive (append it to the initrd): the agent's arguments
    and the ports /init waits for.

    ``agent_args`` replace the default ``--device ... --interval-ms 1000
    --probe file:/run/nfvha/healthy`` entirely."""
    ports = " ".join((CONTROL_PORT, HEARTBEAT_PORT, *extra_ports))
    lines = [f"NFVHA_AUTOSTART={1 if autostart else 0}", f"NFVHA_PORTS={shlex.quote(ports)}",
             f"NFVHA_HOSTNAME={shlex.quote(hostname)}"]
    if agent_args is not None:
        lines.append("NFVHA_AGENT_ARGS=" + shlex.quote(shlex.join(agent_args)))
    cpio = Cpio()
    cpio.file("/etc/nfvha-vm.env", ("\n".join(lines) + "\n").encode())
    return cpio.gzipped()


def _atomic_write(path: Path, data: bytes) -> None:
    # Several test runs may build at once: never let one read a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args(argv)
    vm = build(args.cache, verbose=True)
    if args.json:
        print(json.dumps({k: str(v) for k, v in vm.__dict__.items()}))
    else:
        print(f"kernel={vm.kernel}\ninitrd={vm.initrd}\npython={vm.python} "
              f"({vm.python_version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
