"""mode = nova: the controller asks Nova, as nfvha's service user
(openstacksdk, the connection handling of reporters/_openstack.py):
``reboot`` → a HARD reboot, ``stop`` → os-stop; for a ``host_down`` fault
(the whole host gone) ``reboot`` → evacuate (rebuilt on another host,
Nova's scheduler choosing), asked again while Nova still finds the host's
nova-compute up. 409 (a task is in
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
# host_down (controller/hostfailure.py): the host is gone, so a VM whose guest
# asked for a reboot is rebuilt elsewhere; one that asked to be stopped is off
# already and stays so
HOST_DOWN_ACTIONS = {"reboot": "nova_evacuate"}
FINAL = frozenset({400, 403, 404})
# Nova evacuates only from a host whose nova-compute it finds down (after its
# service_down_time, 60 s by default); before that it answers 400 "Compute
# service of <host> is still in use": asked again until Nova agrees
NOT_YET_DOWN = "still in use"


class NovaExecutor(SdkSink):
    mode = "nova"
    actions = ACTIONS

    host_down_actions = HOST_DOWN_ACTIONS

    def __init__(self, conn: ConnectionSource, conflict_retries: int = 5,
                 conflict_base_s: float = 1.0, call_timeout_s: float = 30.0,
                 service_down_wait_s: float = 90.0, service_down_step_s: float = 5.0) -> None:
        super().__init__(conn, FINAL)
        self.conflict_retries = conflict_retries
        self.conflict_base_s = conflict_base_s
        self.service_down_wait_s = service_down_wait_s
        self.service_down_step_s = service_down_step_s
        waits = sum(conflict_base_s * 2 ** i for i in range(conflict_retries))
        self.timeout_s = waits + (conflict_retries + 1) * call_timeout_s + \
            service_down_wait_s

    async def execute(self, action_id: str, event: dict[str, Any], action: str) -> Outcome:
        uuid = event["instance_uuid"]
        call: Callable[[Connection], Any]
        if action == "nova_reboot":
            def call(c: Connection) -> Any:
                return c.compute.reboot_server(uuid, "HARD")
        elif action == "nova_stop":
            def call(c: Connection) -> Any:
                return c.compute.stop_server(uuid)
        elif action == "nova_evacuate":
            def call(c: Connection) -> Any:
                return c.compute.evacuate_server(uuid)
        else:
            return Outcome(False, f"no such Nova action {action!r}", utcnow())
        what = {"nova_reboot": "hard reboot", "nova_stop": "stop",
                "nova_evacuate": "evacuation"}[action]
        waited = 0.0
        attempt = 0
        while attempt <= self.conflict_retries:
            try:
                await asyncio.to_thread(lambda: call(self._connection()))
            except sdk_exc.HttpException as exc:
                status = exc.status_code or 0
                text = f"HTTP {status}: {exc.details or exc.message}"[:300]
                if action == "nova_evacuate" and status == 400 and NOT_YET_DOWN in text:
                    if waited >= self.service_down_wait_s:
                        raise Retry(f"Nova does not see the host down yet: {text}") from exc
                    step = min(self.service_down_step_s, self.service_down_wait_s - waited)
                    await asyncio.sleep(step)
                    waited += step
                    continue
                if status == 409:
                    if attempt < self.conflict_retries:
                        await asyncio.sleep(self.conflict_base_s * 2 ** attempt)
                        attempt += 1
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
