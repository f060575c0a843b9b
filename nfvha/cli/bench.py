"""`nfvha bench`: runs the benchmark scripts of a source checkout (bench/)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_bench(args: list[str]) -> int:
    script = Path(__file__).resolve().parents[2] / "bench" / "run.py"
    if not script.exists():
        print("nfvha bench needs a source checkout (bench/run.py not found)")
        return 2
    return subprocess.call([sys.executable, str(script), *args])
