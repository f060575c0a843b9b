"""Where the compute agent learns which guest channels exist.

An ``InstanceSource`` offers channels to the agent's ``ChannelPool`` and
withdraws them when they go; it also explains a lost heartbeat channel and
carries out recovery actions when it can:

- directory.py: ``DirectorySource``, QEMU chardev sockets found by name in
  a directory (polled); explains nothing, cannot recover;
- libvirt.py: ``LibvirtSource``, the domains of a libvirtd (lifecycle
  events, the domains' ``<channel>``s); explains losses, resets/destroys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nfvha.compute.pool import ChannelPool

CHANNEL_LOST = "channel_lost"
VM_CRASHED = "vm_crashed"
RECOVERY_ACTIONS = ("reset", "destroy")


@dataclass(frozen=True)
class LossVerdict:
    """Why an enabled guest's heartbeat channel closed.

    kind None: no fault (shut down, destroyed, migrated, detached: the host
    knows); "channel_lost": the fault stands; "vm_crashed": it replaces it.
    """

    kind: str | None
    detail: str = ""


class InstanceSource(Protocol):
    name: str
    can_recover: bool  # False: recover() refuses, and the guest is not put on standby

    async def start(self, pool: ChannelPool) -> None:
        """Begin feeding `pool`; what exists has been offered when this returns."""

    async def stop(self) -> None:
        """Stop feeding the pool (its sessions are the pool's to close)."""

    async def explain_loss(self, uuid: str) -> LossVerdict:
        """The heartbeat channel of an enabled guest closed: why? Bounded wait."""

    async def recover(self, uuid: str, action: str) -> tuple[bool, str]:
        """Carry out `action` ("reset" | "destroy") on the instance: (ok, detail)."""
