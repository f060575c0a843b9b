"""`make bench`: runs every benchmark script in bench/ and prints their tables.

Each script measures on this machine and prints what it measured; nothing
here is a stored figure. Pass --quick for a short smoke run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["detection.py", "detection_load.py", "virtio_serial.py", "heartbeat_scale.py",
           "controller_delivery.py", "servergroup_latency.py", "compute_cast_cpu.py",
           "compute_liveness.py", "recovery.py", "host_down.py", "chaos.py"]


def main(argv: list[str]) -> int:
    rc = 0
    for name in SCRIPTS:
        script = HERE / name
        if not script.exists():
            print(f"== {name}: not present in this checkout, skipped\n")
            continue
        print(f"== {name}", flush=True)
        rc |= subprocess.call([sys.executable, str(script), *argv])
        print(flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
