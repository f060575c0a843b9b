"""What every mode's executor offers the recovery sink."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Optional, Protocol


@dataclass(frozen=True)
class Outcome:
    ok: bool                          # carried out (False: refused for good)
    detail: str = ""
    done_at: Optional[datetime] = None


class Executor(Protocol):
    mode: str                         # libvirt | nova
    actions: Mapping[str, str]        # the guest's corrective_action → our action
    timeout_s: float                  # the longest one execute() may take

    async def execute(self, action_id: str, event: dict[str, Any], action: str) -> Outcome:
        """Carry ``action`` out on the event's instance. Raises
        reporters.Retry when the answer is unknown (ask again, same id)."""
        ...

    async def aclose(self) -> None: ...
