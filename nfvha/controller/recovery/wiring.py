"""Builds the recovery sink from the configuration and binds it to a
controller (duck-typed: nothing here imports service.py)."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from nfvha.controller.recovery.policy import Policy
from nfvha.controller.recovery.sink import Collaborators, RecoverySink

MODES = ("none", "libvirt", "nova", "masakari")
ACTING = ("libvirt", "nova")


def check_mode(mode: str, sinks: Iterable[str]) -> None:
    """Refuse a configuration where two systems would act on one VM, or
    where the one named is missing. Raises ValueError with the fix."""
    names = set(sinks)
    if mode not in MODES:
        raise ValueError(f"[recovery] mode {mode!r}: one of {', '.join(MODES)}")
    if mode in ACTING and "masakari" in names:
        raise ValueError(f"[recovery] mode = {mode} and the masakari sink in [reporters] "
                         "enabled: both would act on the same VM. Remove masakari from "
                         "[reporters] enabled, or set [recovery] mode = masakari.")
    if mode == "masakari" and "masakari" not in names:
        raise ValueError("[recovery] mode = masakari needs the masakari sink: add it to "
                         "[reporters] enabled (or choose mode libvirt, nova or none).")
    if "recovery" in names:
        raise ValueError("'recovery' is not a sink to name in [reporters] enabled: "
                         "set [recovery] mode = libvirt or nova")


def build_sink(conf: Any, bus: Any) -> Optional[RecoverySink]:
    """The recovery sink [recovery] asks for, or None (mode none/masakari:
    nfvha never acts). Bind it with ``attach`` once the controller is built."""
    rc = conf.recovery
    if rc.mode not in ACTING:
        return None
    executor: Any
    if rc.mode == "libvirt":
        from nfvha.controller.recovery.libvirt import LibvirtExecutor

        if bus is None:
            raise ValueError("[recovery] mode = libvirt needs the bus to the compute agents")
        executor = LibvirtExecutor(bus)
    else:
        from nfvha.controller.recovery.nova import NovaExecutor
        from nfvha.controller.reporters._openstack import connect

        cloud = rc.nova_cloud

        def factory(cloud: str = cloud) -> Any:
            return connect(cloud=cloud)

        executor = NovaExecutor(factory)
    policy = Policy(max_actions=rc.max_actions, window_s=rc.window_s,
                    min_uptime_s=rc.min_uptime_s)
    return RecoverySink(executor, policy, notice_timeout_s=rc.notice_timeout_s,
                        recovered_timeout_s=rc.recovered_timeout_s)


def attach(sink: RecoverySink, controller: Any) -> None:
    """Give the sink its collaborators from ``controller`` (a
    nfvha.controller.service.Controller whose reporters include it)."""
    def store(name: str, *args: Any) -> Any:
        return controller._db(getattr(controller.store, name), *args)

    def host_silent(host: str) -> bool:
        hosts = controller.hosts
        return hosts is not None and hosts.state(host) == "silent"

    if hasattr(sink.executor, "reply_to"):  # the compute answers this controller
        sink.executor.reply_to = controller.controller_id
    sink.bind(Collaborators(store=store, host_silent=host_silent,
                            notice=controller.request_action, emit=controller.emit,
                            metrics=controller.metrics))
