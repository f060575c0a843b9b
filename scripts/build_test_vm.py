#!/usr/bin/env python3
"""Build (or find in the cache) the nfvha guest image: kept for old habits;
the builder is nfvha/demo/guest_image.py (docs/qemu-test-vm.md).

    python3 scripts/build_test_vm.py            # prints kernel= and initrd= paths
    python3 scripts/build_test_vm.py --json     # the same as one JSON object
    python3 scripts/build_test_vm.py --install  # and copies them to /var/lib/nfvha/images/
"""
from __future__ import annotations

import sys
from pathlib import Path

# Runs from a checkout without the package installed too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nfvha.demo.guest_image import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
