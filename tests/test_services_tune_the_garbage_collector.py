"""Controller and compute agent take their start-up objects out of the
cyclic collector's walk and collect less often: a full collection of a
controller process took ~60 ms, the 90-110 ms single server-group
deliveries bench/servergroup_latency.py showed."""
from __future__ import annotations

import gc
from pathlib import Path

from nfvha.controller.service import Controller


async def test_a_started_controller_has_frozen_its_objects_and_raised_the_thresholds(
        tmp_path: Path) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    c = Controller(f"sqlite:///{tmp_path / 'c.db'}", [])
    await c.start()
    try:
        assert gc.get_freeze_count() > 10000
        assert gc.get_threshold() == (20000, 20, 100)
    finally:
        await c.stop()
