"""Log sink: one JSON line per fault on the ``nfvha.faults`` logger."""
from __future__ import annotations

import json
import logging
from typing import Any, Optional


class LogReporter:
    def __init__(self, name: str = "log", logger: Optional[logging.Logger] = None) -> None:
        self.name = name
        self._log = logger or logging.getLogger("nfvha.faults")

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        self._log.warning("fault %s", json.dumps(event, sort_keys=True, default=str))
        return None
