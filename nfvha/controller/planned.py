"""Planned operations are not faults.

When Nova deletes, stops, reboots, pauses, suspends, shelves, resizes,
rescues, evacuates or live-migrates an instance, its QEMU stops or freezes
on purpose: the heartbeat channel closes (``channel_lost``) or the guest
stops answering (``heartbeat_loss``). Reporting that would have Masakari
"recover" a VM an operator is deleting, or Nova reset a migrating one to
ERROR. So the controller reads Nova's notifications (the same listener the
server groups use) and keeps, per instance, the operation in progress
(``instance.<action>.start`` … ``.end``, legacy ``compute.instance.*``),
its task_state and vm_state. A fault that one of them explains is still
stored, with every delivery marked ``suppressed`` and the reason; it is
not sent to any sink.

Nova emits an operation's notification just before it acts, but it
travels its own way to us, so a fault is held ``grace_s`` (0.25 s by
default) before this is asked. An operation's explanation lingers
``linger_s`` after its ``.end``: the source of a live migration closes its
channel around then. An operation or task whose end never came explains
nothing after ``max_op_s`` (1 h), and a guest that heartbeats again makes
a "down" vm_state stale (a notification was missed).

Pure bookkeeping, time comes in as an argument.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Optional

from nfvha.controller.nova_notifications import InstanceChange

# task_state values while Nova stops, freezes, moves or removes the guest
DISRUPTIVE_TASKS = frozenset({
    "deleting", "soft-deleting", "powering-off", "rebooting", "reboot_pending",
    "reboot_started", "rebooting_hard", "reboot_pending_hard", "reboot_started_hard",
    "rebuilding", "rebuild_block_device_mapping", "rebuild_spawning", "pausing",
    "suspending", "shelving", "shelving_image_pending_upload", "shelving_image_uploading",
    "shelving_offloading", "migrating", "resize_prep", "resize_migrating",
    "resize_migrated", "resize_finish", "resize_reverting", "resize_confirming",
    "rescuing", "unrescuing", "restoring"})
# vm_state values in which the guest is not meant to run
DOWN_STATES = frozenset({"deleted", "soft-delete", "stopped", "paused", "suspended",
                         "shelved", "shelved_offloaded", "rescued"})
# words of operation names ("instance.<action>.start") that stop or move the guest
DISRUPTIVE_WORDS = ("delete", "power_off", "reboot", "rebuild", "pause", "suspend",
                    "shelve", "resize", "migrat", "evacuate", "rescue", "crash_dump")


@dataclasses.dataclass
class _Instance:
    task_state: Optional[str] = None
    task_since: float = 0.0
    vm_state: Optional[str] = None
    op: Optional[str] = None            # an operation between .start and .end
    op_since: float = 0.0
    ended_op: Optional[str] = None
    ended_at: float = 0.0


def _operation(event_type: str) -> tuple[Optional[str], Optional[str]]:
    """("live_migration_pre", "start") from "instance.live_migration_pre.start"."""
    for prefix in ("compute.instance.", "instance."):
        if event_type.startswith(prefix):
            rest = event_type[len(prefix):]
            break
    else:
        return None, None
    action, _, phase = rest.rpartition(".")
    if phase not in ("start", "end", "error") or not action:
        return None, None
    return action, phase


class PlannedOps:
    def __init__(self, linger_s: float = 5.0, max_instances: int = 100_000,
                 max_op_s: float = 3600.0) -> None:
        self.linger_s = linger_s
        self.max_op_s = max_op_s
        self.max_instances = max_instances
        self._by_uuid: OrderedDict[str, _Instance] = OrderedDict()

    def observe(self, change: InstanceChange, now: float) -> None:
        rec = self._by_uuid.get(change.uuid)
        if rec is None:
            rec = self._by_uuid[change.uuid] = _Instance()
            while len(self._by_uuid) > self.max_instances:
                self._by_uuid.popitem(last=False)   # the least recently heard of
        else:
            self._by_uuid.move_to_end(change.uuid)
        # updates carry the task state, and so does every versioned payload
        # (None once done: a reboot.end clears "rebooting"); legacy action
        # events do not mention it
        if change.event_type.endswith("update") or change.event_type.startswith("instance."):
            if change.task_state != rec.task_state:
                rec.task_state, rec.task_since = change.task_state, now
        if change.state is not None:
            rec.vm_state = change.state
        action, phase = _operation(change.event_type)
        if action is None or not any(w in action for w in DISRUPTIVE_WORDS):
            return
        if phase == "start":
            rec.op, rec.op_since = action, now
        else:  # end or error: over, but its effects may trail a little
            rec.ended_op, rec.ended_at = rec.op or action, now
            rec.op = None

    def running(self, uuid: str) -> None:
        """The guest heartbeats again: a down vm_state we hold is stale (a
        notification missed), unless an operation is still going on."""
        rec = self._by_uuid.get(uuid)
        if rec is not None and rec.op is None and rec.task_state not in DISRUPTIVE_TASKS:
            rec.vm_state = None

    def explains(self, uuid: str, now: float) -> Optional[str]:
        """Why a fault of `uuid` now is a planned operation, or None."""
        rec = self._by_uuid.get(uuid)
        if rec is None:
            return None
        # an operation or task heard of long ago and never ended: its end
        # was missed; a stale explanation must not hide faults for ever
        if rec.op is not None and now - rec.op_since <= self.max_op_s:
            return f"Nova operation {rec.op} in progress"
        if rec.task_state in DISRUPTIVE_TASKS and now - rec.task_since <= self.max_op_s:
            return f"Nova task_state {rec.task_state}"
        if rec.vm_state in DOWN_STATES:
            return f"Nova vm_state {rec.vm_state}"
        if rec.ended_op is not None and now - rec.ended_at <= self.linger_s:
            return f"Nova operation {rec.ended_op} ended {now - rec.ended_at:.1f} s ago"
        return None

    def __len__(self) -> int:
        return len(self._by_uuid)
