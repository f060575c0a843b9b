"""The in-VM side of nfvha: the heartbeat agent and the library applications embed.

Standard library only, Python 3.8+; ships also as one zipapp file
(scripts/build_guest_zipapp.py). Embedding::

    from nfvha.guest import Agent, register_health_check

    register_health_check(lambda: (db_ok(), "database unreachable"))
    Agent("/dev/virtio-ports/cgcs.heartbeat", interval_ms=200).run_forever()

Server-group messaging (docs/server-group.md)::

    from nfvha.guest import GroupClient

    group = GroupClient()            # /dev/virtio-ports/cgcs.messaging
    group.broadcast("I am active, epoch 7")
    members = group.status(timeout=5)
"""
from .agent import Agent, register_health_check
from .group import GroupClient, GroupError, GroupSocketServer, GroupTimeout

__all__ = ["Agent", "register_health_check", "GroupClient", "GroupError", "GroupSocketServer",
           "GroupTimeout"]
