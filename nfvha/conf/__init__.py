"""nfvha's oslo.config options, one module per section (as OpenStack services do).

`register(conf)` registers every group; `list_opts()` feeds
oslo-config-generator (`make sample-config`).
"""
from __future__ import annotations

from oslo_config import cfg

from nfvha.conf import (
    api,
    bus,
    compute,
    database,
    heartbeat,
    hosts,
    nova,
    recovery,
    reporters,
    servergroup,
)

_MODULES = (api, bus, compute, database, heartbeat, hosts, nova, recovery, reporters,
            servergroup)


def register(conf: cfg.ConfigOpts) -> None:
    for module in _MODULES:
        module.register(conf)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    out: list[tuple[str, list[cfg.Opt]]] = []
    for module in _MODULES:
        out.extend(module.list_opts())
    return out
