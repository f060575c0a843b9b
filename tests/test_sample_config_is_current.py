"""etc/nfvha/nfvha.conf.sample is what oslo-config-generator makes of the
options today (`make sample-config`): an option added, moved or reworded
without regenerating it fails here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_sample_config_matches_the_options(tmp_path: Path) -> None:
    out = tmp_path / "nfvha.conf.sample"
    subprocess.run([sys.executable, "-m", "oslo_config.generator", "--namespace", "nfvha",
                    "--output-file", str(out)], check=True)
    committed = (ROOT / "etc" / "nfvha" / "nfvha.conf.sample").read_text()
    assert out.read_text() == committed, "run `make sample-config` and commit the result"
