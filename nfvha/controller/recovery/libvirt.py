"""mode = libvirt: the compute agent of the instance's host acts (only it
reaches its libvirtd). The controller casts ``recover(action_id, reply_to,
instance_uuid, action)`` to it and waits for the ``recovery_result`` cast
back. The agent remembers the ids it carried out, so asking again with the
same id (after a lost answer or a controller crash) never acts twice."""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from nfvha.controller.recovery.executor import Outcome
from nfvha.controller.reporters import Retry

ACTIONS = {"reboot": "reset", "stop": "destroy"}
# reset is quick; destroy + start after a failed reset may take a while
RESULT_TIMEOUT_S = 60.0


class LibvirtExecutor:
    mode = "libvirt"
    actions = ACTIONS

    def __init__(self, bus: Any, reply_to: str = "",
                 result_timeout_s: float = RESULT_TIMEOUT_S) -> None:
        self.bus = bus
        # the controller_id the compute answers to (wiring.attach sets it)
        self.reply_to = reply_to
        self.result_timeout_s = result_timeout_s
        self.timeout_s = result_timeout_s + 5.0
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}

    async def execute(self, action_id: str, event: dict[str, Any], action: str) -> Outcome:
        host = event["host"]
        fut = self._waiting.get(action_id)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._waiting[action_id] = fut
        try:
            await self.bus.cast_compute(host, "recover", action_id=action_id,
                                        reply_to=self.reply_to,
                                        instance_uuid=event["instance_uuid"], action=action)
            return await asyncio.wait_for(asyncio.shield(fut), self.result_timeout_s)
        except asyncio.TimeoutError:
            raise Retry(f"no recovery_result from compute {host} within "
                        f"{self.result_timeout_s:g} s") from None
        except Retry:
            raise
        except Exception as exc:  # the bus: ask again later, same id
            raise Retry(f"cannot reach compute {host}: {type(exc).__name__}: {exc}"[:300]) \
                from exc
        finally:
            if self._waiting.get(action_id) is fut:
                del self._waiting[action_id]

    def result(self, action_id: str, outcome: Outcome) -> bool:
        """A recovery_result for an action this executor waits for: True if
        it was one."""
        fut: Optional[asyncio.Future[Outcome]] = self._waiting.get(action_id)
        if fut is None or fut.done():
            return False
        fut.set_result(outcome)
        return True

    async def aclose(self) -> None:
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
