"""Fault sinks: one module per external system.

Every reporter has a ``name`` (the sink name stored with each delivery) and
``async def deliver(event: dict) -> str | None``.  It returns when the sink
acknowledged the event (optionally with a short note that is stored with the
delivery, e.g. "skipped: corrective_action none"), raises ``Retry`` when the
sink may accept it later and ``Reject`` when it never will.  Retrying,
backoff and bookkeeping live in the controller, never in a reporter.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable


class Retry(Exception):
    """The sink did not acknowledge; try again later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Reject(Exception):
    """The sink refused the event for good (bad request, duplicate, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Reporter(Protocol):
    name: str

    async def deliver(self, event: dict[str, Any]) -> Optional[str]: ...


# Actions that ask the cloud to do nothing: sinks that trigger recovery skip them.
NON_RECOVERY_ACTIONS = frozenset({"none", "log"})


def recovery_skip_note(event: dict[str, Any]) -> Optional[str]:
    """The note a recovery-triggering sink stores instead of acting, or None."""
    action = event.get("corrective_action")
    if action in NON_RECOVERY_ACTIONS:
        return f"skipped: corrective_action {action}"
    return None


SINKS = ("log", "webhook", "masakari", "nova", "doctor", "aodh", "vitrage")


def build(names: list[str], conf: Any, webhook_url: Optional[str] = None) -> list[Reporter]:
    """Reporters named in ``names`` from oslo.config ``conf`` (groups webhook,
    masakari, nova, doctor, aodh, vitrage; nfvha/conf/reporters.py).  OpenStack
    connections are opened lazily, on the first delivery, so a controller
    starts (and stores faults) even while Keystone is unreachable."""
    out: list[Reporter] = []
    for name in names:
        if name == "log":
            from nfvha.controller.reporters.log import LogReporter

            out.append(LogReporter())
        elif name == "webhook":
            from nfvha.controller.reporters.webhook import WebhookReporter

            url = webhook_url or conf.webhook.url
            if not url:
                raise ValueError("reporter webhook needs [webhook] url")
            out.append(WebhookReporter(url, timeout_s=conf.webhook.timeout_s))
        elif name in ("masakari", "nova"):
            from nfvha.controller.reporters._openstack import connect

            cloud = getattr(conf, name).cloud

            def factory(cloud: str = cloud) -> Any:
                return connect(cloud=cloud)

            if name == "masakari":
                from nfvha.controller.reporters.masakari import MasakariReporter

                hosts = getattr(conf, "hosts", None)  # [hosts]: absent in reporter-only conf
                out.append(MasakariReporter(factory, host_status=getattr(
                    hosts, "masakari_host_status", "NORMAL") or "NORMAL"))
            else:
                from nfvha.controller.reporters.nova import NovaReporter

                out.append(NovaReporter(factory))
        elif name == "doctor":
            from nfvha.controller.reporters.doctor import DoctorReporter

            if not conf.doctor.inspector_url:
                raise ValueError("reporter doctor needs [doctor] inspector_url")
            out.append(DoctorReporter(conf.doctor.inspector_url))
        elif name == "aodh":
            out.append(_aodh(conf))
        elif name == "vitrage":
            from nfvha.controller.reporters.vitrage import VitrageReporter

            if not conf.vitrage.url:
                raise ValueError("reporter vitrage needs [vitrage] url")
            out.append(VitrageReporter(conf.vitrage.url))
        else:
            raise ValueError(f"unknown reporter {name!r} (known: {', '.join(SINKS)})")
    return out


def _aodh(conf: Any) -> Reporter:
    from nfvha.bus.amqp_connect import amqp_urls, ssl_context_from_oslo
    from nfvha.bus.notify import NotificationPublisher
    from nfvha.controller.reporters.aodh import AodhShortcutReporter

    bus = getattr(conf, "bus", None)  # absent when only the reporter options are registered
    url = conf.aodh.transport_url or (bus and (bus.notifications_url or bus.transport_url))
    if not url or not url.startswith(("rabbit:", "amqp:", "kombu:")):
        raise ValueError("reporter aodh needs a RabbitMQ: [aodh] transport_url or "
                         "[bus] transport_url = rabbit://...")
    project_of = None
    if conf.aodh.cloud:
        from nfvha.controller.reporters._openstack import ProjectLookup, connect

        def factory(cloud: str = conf.aodh.cloud) -> Any:
            return connect(cloud=cloud)

        project_of = ProjectLookup(factory)
    publisher = NotificationPublisher(amqp_urls(url), ssl_context=ssl_context_from_oslo())
    return AodhShortcutReporter(publisher, exchange=conf.aodh.exchange,
                                topic=conf.aodh.topic, project_of=project_of)


__all__ = ["Reject", "Reporter", "Retry", "NON_RECOVERY_ACTIONS", "SINKS", "build",
           "recovery_skip_note"]
