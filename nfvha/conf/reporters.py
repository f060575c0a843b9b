from __future__ import annotations

from oslo_config import cfg

GROUP = "reporters"
OPTS = [
    cfg.ListOpt("enabled", default=["log"],
                help="Sinks every fault event is reported to, each retried until it "
                     "acknowledges: log, webhook, masakari, nova, doctor, aodh, vitrage."),
    cfg.FloatOpt("retry_base_s", default=0.05, help="First retry delay; doubles each attempt."),
    cfg.FloatOpt("retry_max_s", default=30.0, help="Longest delay between two attempts."),
]
WEBHOOK = [
    cfg.URIOpt("url", help="Receives each fault event as a JSON POST."),
    cfg.FloatOpt("timeout_s", default=2.0, help="Per-request timeout."),
]
MASAKARI = [
    cfg.StrOpt("cloud", default="envvars",
               help="clouds.yaml entry (or 'envvars' for OS_* variables) used by openstacksdk."),
]
NOVA = [
    cfg.StrOpt("cloud", default="envvars",
               help="clouds.yaml entry (or 'envvars' for OS_* variables) used by openstacksdk."),
]
DOCTOR = [
    cfg.URIOpt("inspector_url", help="Doctor inspector base URL, e.g. http://inspector:12345"),
]
AODH = [
    cfg.StrOpt("transport_url", secret=True,
               help="RabbitMQ where Ceilometer reads notifications (rabbit://...). Default: "
                    "[bus] notifications_url, else [bus] transport_url."),
    cfg.StrOpt("exchange", default="nova",
               help="Exchange of the compute.instance.update notification (Nova's)."),
    cfg.StrOpt("topic", default="notifications",
               help="Notification topic; the routing key is <topic>.info."),
    cfg.StrOpt("cloud", default="",
               help="clouds.yaml entry (or 'envvars') used to look up each instance's "
                    "project in Nova, which Aodh matches event alarms by. Empty: the "
                    "notification carries no tenant_id."),
]
VITRAGE = [
    cfg.URIOpt("url", help="Vitrage API base URL, e.g. http://vitrage:8999"),
]
_GROUPS = {GROUP: OPTS, "webhook": WEBHOOK, "masakari": MASAKARI, "nova": NOVA,
           "doctor": DOCTOR, "aodh": AODH, "vitrage": VITRAGE}


def register(conf: cfg.ConfigOpts) -> None:
    for group, opts in _GROUPS.items():
        conf.register_opts(opts, group=group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return list(_GROUPS.items())
