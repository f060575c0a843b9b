"""[nova]: what the controller takes from Nova's notifications.

These options lived under [servergroup] (server-group peers were their
first use); the old names still work, with a deprecation warning.
"""
from __future__ import annotations

from oslo_config import cfg

GROUP = "nova"
OPTS = [
    cfg.BoolOpt("notifications", default=False,
                deprecated_opts=[cfg.DeprecatedOpt("nova_notifications", group="servergroup")],
                help="Listen to Nova's notifications (exchange 'nova') on the bus: tell "
                     "server-group members about their peers' state changes, and do not "
                     "report a fault that a Nova operation in progress explains (delete, "
                     "stop, reboot, pause, suspend, shelve, resize, rescue, evacuate, live "
                     "migration; see [heartbeat] planned_grace_ms). Recommended with "
                     "OpenStack, with Nova's [notifications] notify_on_state_change = "
                     "vm_and_task_state. Needs a RabbitMQ transport_url."),
    cfg.ListOpt("notification_topics", default=["notifications", "versioned_notifications"],
                deprecated_group="servergroup",
                help="Nova notification topics to listen to."),
    cfg.StrOpt("notification_pool", default="nfvha", deprecated_group="servergroup",
               help="Listener pool: nfvha's own queue, so other consumers keep theirs."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
