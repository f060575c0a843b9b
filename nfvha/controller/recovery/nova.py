"""mode = nova: the controller asks Nova, as nfvha's service user
(openstacksdk, the connection handling of reporters/_openstack.py):
``reboot`` → a HARD reboot, ``stop`` → os-stop. 409 (a task is in
progress on the server) is asked again with backoff, a bounded number of
times; 404 (the server is gone), 400 and 403 are final (the action
failed); anything else is unknown and retried by the delivery."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from openstack import exceptions as sdk_exc
from openstack.connection import Connection

from nfvha.controller.recovery.executor import Outcome
from nfvha.controller.reporters import Retry
from nfvha.controller.reporters._openstack import ConnectionSource, SdkSink
from nfvha.controller.timeutil import utcnow

ACTIONS = {"reboot": "nova_reboot", "stop": "nova_stop"}
FINAL = frozenset({400, 403, 404})


class NovaExecutor(SdkSink):
    mode = "nova"
    actions = ACTIONS

    def __init__(self, conn: ConnectionSource, conflict_retries: int = 5,
                 conflict_base_s: float = 1.0, call_timeout_s: float = 30.0) -> None:
        super().__init__(conn, FINAL)
        self.conflict_retries = conflict_retries
        self.conflict_base_s = conflict_base_s
        waits = sum(conflict_base_s * 2 ** i for i in range(conflict_retries))
        self.timeout_s = waits + (conflict_retries + 1) * call_timeout_s

    async def execute(self, action_id: str, event: dict[str, Any], action: str) -> Outcome:
        uuid = event["instance_uuid"]
        call: Callable[[Connection], Any]
        if action == "nova_reboot":
            def call(c: Connection) -> Any:
                return c.compute.reboot_server(uuid, "HARD")
        elif action == "nova_stop":
            def call(c: Connection) -> Any:
                return c.compute.stop_server(uuid)
        else:
            return Outcome(False, f"no such Nova action {action!r}", utcnow())
        what = "hard reboot" if action == "nova_reboot" else "stop"
        for attempt in range(self.conflict_retries + 1):
            try:
                await asyncio.to_thread(lambda: call(self._connection()))
            except sdk_exc.HttpException as exc:
                status = exc.status_code or 0
                text = f"HTTP {status}: {exc.details or exc.message}"[:300]
                if status == 409:
                    if attempt < self.conflict_retries:
                        await asyncio.sleep(self.conflict_base_s * 2 ** attempt)
                        continue
                    return Outcome(False, f"Nova {what} refused {attempt + 1} times, a task "
                                          f"in progress: {text}", utcnow())
                if status == 404:
                    return Outcome(False, f"instance gone: {text}", utcnow())
                if status in FINAL:
                    return Outcome(False, f"Nova refused the {what}: {text}", utcnow())
                raise Retry(text) from exc
            except Exception as exc:  # keystoneauth ConnectFailure, SDKException, ...
                raise Retry(f"{type(exc).__name__}: {exc}"[:300]) from exc
            tries = f" (after {attempt} conflicts)" if attempt else ""
            return Outcome(True, f"Nova accepted the {what}{tries}", utcnow())
        raise AssertionError("unreachable")  # pragma: no cover
