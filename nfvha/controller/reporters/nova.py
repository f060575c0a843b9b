"""Nova sink: ``os-resetState`` to ``error`` (a server action, admin), the way
Doctor makes a VM fault visible to the VNF manager.  Through openstacksdk
(``compute.reset_server_state``), admin only.  400/403/404 are final (bad
request, not allowed, instance gone); the rest is retried.  Resetting to
error twice is harmless, so redelivery is idempotent.  Events whose
corrective action is none/log are skipped.
"""
from __future__ import annotations

from typing import Any, Optional

from nfvha.controller.reporters import recovery_skip_note
from nfvha.controller.reporters._openstack import ConnectionSource, SdkSink


class NovaReporter(SdkSink):
    def __init__(self, conn: ConnectionSource, name: str = "nova", state: str = "error") -> None:
        super().__init__(conn, frozenset({400, 403, 404}))
        self.name = name
        self.state = state

    async def deliver(self, event: dict[str, Any]) -> Optional[str]:
        skip = recovery_skip_note(event)
        if skip:
            return skip
        uuid = event["instance_uuid"]
        await self._call(lambda c: c.compute.reset_server_state(uuid, self.state))
        return None
