from __future__ import annotations

import socket

from oslo_config import cfg

DEFAULT_OPTS = [
    cfg.StrOpt("host", default=socket.gethostname(), sample_default="<hostname>",
               help="Name of this node; compute agents are addressed by it on the bus."),
    cfg.StrOpt("controller_id", default=None, sample_default="<host>",
               help="Controller: owner name of its delivery leases and the name vote "
                    "answers are sent back to. Stable across restarts; every controller "
                    "sharing one database and bus needs its own. Default: host."),
    cfg.FloatOpt("delivery_lease_s", default=0.75, min=0.2,
                 help="Controller: how long its claim on a pending delivery lasts unless "
                      "renewed (it renews every quarter of it, and before each attempt; the "
                      "database decides between controllers). A killed controller's "
                      "deliveries are taken over by a live one within about this long plus "
                      "a quarter; an orderly stop hands "
                      "them over at once. Controllers' clocks must agree to well within it "
                      "(NTP)."),
]
GROUP = "bus"
OPTS = [
    cfg.StrOpt("transport_url", default="inproc://", secret=True,
               help="Bus between controller and compute agents. 'inproc://' runs both in "
                    "one process (the embedded default); 'rabbit://user:pass@host:5672/' "
                    "uses oslo.messaging over RabbitMQ."),
    cfg.StrOpt("compute_casts", default="amqp", choices=[
        ("amqp", "nfvha's asyncio AMQP consumer on the same broker: about a third of "
                 "oslo.messaging's CPU per message in each compute agent"),
        ("oslo", "oslo.messaging RPC casts, like the rest of the bus")],
        help="How the controller's casts to compute agents (server-group deliveries) "
             "travel over RabbitMQ. Both ends must use the same setting."),
    cfg.StrOpt("notifications_url", default=None, secret=True,
               help="Where Nova publishes its notifications (defaults to transport_url)."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(DEFAULT_OPTS)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [("DEFAULT", DEFAULT_OPTS), (GROUP, OPTS)]
