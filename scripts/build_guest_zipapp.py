#!/usr/bin/env python3
"""Builds dist/nfvha-guest.pyz: the guest agent as one file for VM images.

Holds nfvha/__init__.py, nfvha/protocol and nfvha/guest (standard library
only, Python >= 3.8); run it with ``python3 nfvha-guest.pyz [options]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipapp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("nfvha/protocol", "nfvha/guest")
MAIN = "import sys\n\nfrom nfvha.guest.cli import main\n\nsys.exit(main())\n"


def build(output: str) -> str:
    with tempfile.TemporaryDirectory(prefix="nfvha-zipapp-") as staging:
        os.makedirs(os.path.join(staging, "nfvha"))
        shutil.copy2(os.path.join(REPO, "nfvha", "__init__.py"),
                     os.path.join(staging, "nfvha", "__init__.py"))
        for package in PACKAGES:
            src = os.path.join(REPO, package)
            dst = os.path.join(staging, package)
            os.makedirs(dst)
            for name in sorted(os.listdir(src)):
                if name.endswith(".py"):
                    shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
        with open(os.path.join(staging, "__main__.py"), "w", encoding="utf-8") as f:
            f.write(MAIN)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        zipapp.create_archive(staging, output, interpreter="/usr/bin/env python3",
                              compressed=True)
    return output


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", "-o", default=os.path.join(REPO, "dist", "nfvha-guest.pyz"))
    args = parser.parse_args(argv)
    path = build(args.output)
    print(f"{path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
