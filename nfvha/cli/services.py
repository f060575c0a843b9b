"""Builds controller, compute agent and API from oslo.config, and runs them."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oslo_config import cfg

import nfvha.conf
from nfvha.guest.sdnotify import Notifier

LOG = logging.getLogger(__name__)


def load_conf(config_files: list[str], args: list[str] | None = None) -> cfg.ConfigOpts:
    # oslo.messaging looks its own option groups up on the global CONF only
    # (a private ConfigOpts fails its first call), so nfvha uses it too.
    conf = cfg.CONF
    with contextlib.suppress(cfg.DuplicateOptError, cfg.ArgsAlreadyParsedError):
        nfvha.conf.register(conf)
    conf(args or [], project="nfvha", default_config_files=config_files or None,
         validate_default_values=True)
    return conf


def split_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host or default_host), int(port)


def build_reporters(conf: cfg.ConfigOpts, extra_webhook: str | None = None) -> list[Any]:
    from nfvha.controller import reporters

    names = list(conf.reporters.enabled)
    if extra_webhook and "webhook" not in names:
        names.append("webhook")
    return reporters.build(names, conf, webhook_url=extra_webhook)


@dataclass
class Stack:
    """What one process runs: any of controller, compute agent, API server."""

    bus: Any = None
    controller: Any = None
    compute: Any = None
    api_task: asyncio.Task[None] | None = None
    api_server: Any = None
    api_url: str = ""

    async def stop(self) -> None:
        if self.api_server is not None:
            self.api_server.should_exit = True
        if self.api_task is not None:
            with contextlib.suppress(Exception):
                await self.api_task
        if self.compute is not None:
            await self.compute.stop()
        if self.controller is not None:
            await self.controller.stop()
        if self.bus is not None:
            await self.bus.stop()


async def start_api(stack: Stack, listen: str, port: int,
                    conf: cfg.ConfigOpts | None = None) -> None:
    import socket

    import uvicorn

    from nfvha.controller.api import ApiLimits, make_app

    app = make_app(stack.controller, ApiLimits.from_conf(conf))
    if conf is not None and conf.api.auth_strategy == "keystone":
        from nfvha.controller import apiauth
        from nfvha.controller.reporters._openstack import connect

        cloud = conf.api.keystone_cloud
        if not cloud:
            raise SystemExit("[api] auth_strategy = keystone needs [api] keystone_cloud")
        tokens = apiauth.KeystoneTokens(lambda: connect(cloud=cloud), conf.api.admin_roles,
                                        cache_s=conf.api.token_cache_s)
        apiauth.protect(app, tokens, protect_reads=conf.api.protect_reads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((listen, port))
    stack.api_server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    stack.api_task = asyncio.create_task(stack.api_server.serve(sockets=[sock]))
    while not stack.api_server.started:
        if stack.api_task.done():
            stack.api_task.result()
        await asyncio.sleep(0.01)
    host_, port_ = sock.getsockname()[:2]
    stack.api_url = f"http://{host_}:{port_}"


def load_groups_file(path: str | None) -> Any:
    """[servergroup] groups_file (YAML or JSON) → what load_config takes."""
    if not path:
        return None
    import yaml  # JSON is YAML too

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def messaging_options(conf: cfg.ConfigOpts) -> dict[str, Any]:
    """ComputeAgent keyword arguments for server-group messaging."""
    from nfvha.protocol.sgsession import SessionConfig

    sgc = conf.servergroup
    return {"messaging": sgc.enabled, "messaging_pattern": sgc.socket_pattern,
            "messaging_config": SessionConfig(instance="", rate_per_s=sgc.rate_per_s,
                                              burst=sgc.burst, single_port=sgc.single_port)}


async def start_servergroup_sources(conf: cfg.ConfigOpts, stack: Stack) -> None:
    """Nova as a source of groups and state changes, when configured."""
    sgc, nova = conf.servergroup, conf.nova
    service = stack.controller.servergroups
    if nova.notifications:
        listen = getattr(stack.bus, "listen_notifications", None)
        if listen is None:
            LOG.warning("[nova] notifications needs a RabbitMQ transport_url")
        else:
            # Server-group peers: the controllers share one pool, so each
            # notification is told to the peers once.
            await listen("nova", list(nova.notification_topics),
                         service.on_nova_notification, pool=nova.notification_pool)
            # Planned operations: every controller must see every operation
            # (any of them may deliver the fault it explains), so each has a
            # pool of its own, named after its stable controller_id: what
            # Nova said while it restarted waits for it.
            ctl = stack.controller
            await listen("nova", list(nova.notification_topics), ctl.on_nova_operation,
                         pool=f"{nova.notification_pool}-planned-{ctl.controller_id}")
            # faults wait the grace from now on, not only after a first notification
            ctl.planned_active = True
    if sgc.nova_cloud:
        cloud = sgc.nova_cloud

        def connect() -> Any:
            import openstack

            return openstack.connect() if cloud == "envvars" else openstack.connect(cloud=cloud)

        service.start_nova_sync(connect, sgc.nova_sync_s)


def _spool_dir(conf: cfg.ConfigOpts, host: str, instances_dir: str) -> Path | None:
    """One spool per compute agent identity (host, instances directory), so
    agents side by side never resend each other's faults."""
    base = conf.heartbeat.spool_dir
    if not base:
        return None
    key = hashlib.sha1(str(Path(instances_dir).resolve()).encode()).hexdigest()[:10]
    return Path(base) / f"{host}-{key}"


def build_source(conf: cfg.ConfigOpts) -> Any:
    """The compute agent's instance source from [compute]; None: the
    instances directory (the agent's default)."""
    if conf.compute.instances_source != "libvirt":
        return None
    try:
        from nfvha.compute.sources.libvirt import LibvirtSource
    except ImportError as exc:
        raise SystemExit("nfvha: [compute] instances_source = libvirt needs libvirt-python "
                         f"(pip install 'nfvha[libvirt]'): {exc}") from None
    source = LibvirtSource(conf.compute.libvirt_uri, loss_wait_s=conf.compute.loss_wait_s)
    cloud = conf.compute.nova_cloud
    if not cloud:
        return source
    from nfvha.compute.autoplug import Autoplug, AutoplugSource
    from nfvha.compute.flavor import ChannelRequests

    def connect() -> Any:
        import openstack

        return openstack.connect() if cloud == "envvars" else openstack.connect(cloud=cloud)

    return AutoplugSource(source, Autoplug(ChannelRequests(connect), conf.compute.libvirt_uri,
                                           conf.compute.channels_dir))


async def start_stack(conf: cfg.ConfigOpts, *, controller: bool, compute: bool,
                      transport_url: str | None = None, db_url: str | None = None,
                      instances_dir: str | None = None, api: str | None = None,
                      reporters: list[Any] | None = None, host: str | None = None) -> Stack:
    from nfvha.bus import make_bus

    stack = Stack()
    stack.bus = make_bus(transport_url or conf.bus.transport_url,
                         compute_casts=conf.bus.compute_casts)
    await stack.bus.start()
    try:
        if controller:
            from nfvha.controller.recovery import wiring as recovery
            from nfvha.controller.service import Controller

            sinks = reporters if reporters is not None else build_reporters(conf)
            try:
                recovery.check_mode(conf.recovery.mode, [r.name for r in sinks])
                recovery_sink = recovery.build_sink(conf, stack.bus)
            except ValueError as exc:
                raise SystemExit(f"nfvha: {exc}") from None
            if recovery_sink is not None:
                sinks = [*sinks, recovery_sink]
            from nfvha.conf import database

            url, origin = database.resolve(db_url, conf)
            LOG.info("controller store: %s (%s)", database.describe(url), origin)
            stack.controller = Controller(
                db_url=url,
                reporters=sinks,
                bus=stack.bus, retry_base_s=conf.reporters.retry_base_s,
                retry_max_s=conf.reporters.retry_max_s,
                controller_id=conf.controller_id or conf.host,
                lease_s=conf.delivery_lease_s,
                agent_down_after_s=conf.heartbeat.agent_down_after_s,
                planned_grace_s=conf.heartbeat.planned_grace_ms / 1000,
                planned_linger_s=conf.heartbeat.planned_linger_s,
                server_groups=load_groups_file(conf.servergroup.groups_file))
            if recovery_sink is not None:
                recovery.attach(recovery_sink, stack.controller)
            await stack.controller.start()
            await stack.bus.serve_controller(stack.controller)
            await stack.controller.ask_computes_to_resync()
            await start_servergroup_sources(conf, stack)
            if api != "":
                listen, port = split_hostport(api) if api else (conf.api.listen, conf.api.port)
                await start_api(stack, listen, port, conf)
        if compute:
            from nfvha.compute.agent import ComputeAgent
            from nfvha.protocol.host import HostConfig

            hb = conf.heartbeat
            stack.compute = ComputeAgent(
                host=host or conf.host,
                instances_dir=Path(instances_dir or hb.instances_dir),
                bus=stack.bus, socket_pattern=hb.socket_pattern,
                host_config=HostConfig(min_interval_ms=hb.min_interval_ms,
                                       max_interval_ms=hb.max_interval_ms,
                                       failure_threshold=hb.failure_threshold,
                                       min_response_ms=hb.min_response_ms,
                                       max_extension_ms=hb.max_extension_ms),
                rate_limit_per_s=hb.rate_limit_per_s,
                sync_interval_s=hb.sync_interval_s,
                report_interval_s=hb.agent_report_interval_s,
                spool_dir=_spool_dir(conf, host or conf.host, instances_dir or hb.instances_dir),
                source=build_source(conf), read_batch_ms=hb.read_batch_ms,
                **messaging_options(conf))
            stack.compute.hooks.steady = hb.steady_path
            from nfvha.compute import steady
            missing = steady.unavailable_warning(hb.steady_path)
            if missing:
                LOG.warning("%s", missing)
            if conf.compute.metrics_listen:  # a bad address stops us before any guest
                try:
                    stack.compute.serve_metrics(conf.compute.metrics_listen)
                except ValueError as exc:
                    raise SystemExit(f"nfvha: [compute] metrics_listen: {exc}") from None
            await stack.compute.start()
        # [hosts] / [compute] management_address: a dead host told from a dead agent
        from nfvha.controller import hostfailure

        if stack.compute is not None:
            stack.compute.management_address = conf.compute.management_address
        if stack.controller is not None:
            stack.controller.host_failure = hostfailure.build(conf, stack.controller)
    except BaseException:
        await stack.stop()
        raise
    return stack


async def _run_until_signalled(stack: Stack) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if stack.api_url:
        LOG.info("REST API at %s (OpenAPI: %s/openapi.json)", stack.api_url, stack.api_url)
    # under systemd (etc/systemd/): ready now; the watchdog pings come from
    # this loop, the one that runs the heartbeats, so a hung loop is restarted
    sd = Notifier()
    sd.ready(" ".join(part for part, on in (("controller", stack.controller),
                                            ("compute", stack.compute)) if on))
    watchdog = loop.create_task(sd.watchdog(), name="sd-watchdog")
    await stop.wait()
    sd.stopping()
    watchdog.cancel()
    await asyncio.gather(watchdog, return_exceptions=True)
    await stack.stop()
    sd.close()
    return 0


async def run_all_in_one(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    stack = await start_stack(conf, controller=True, compute=True, transport_url="inproc://",
                              db_url=args.db, instances_dir=args.instances_dir, api=args.api)
    LOG.info("all-in-one: watching %s", stack.compute.instances_dir)
    return await _run_until_signalled(stack)


async def run_controller(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    stack = await start_stack(conf, controller=True, compute=False, db_url=args.db, api=args.api)
    return await _run_until_signalled(stack)


async def run_compute(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    stack = await start_stack(conf, controller=False, compute=True,
                              instances_dir=args.instances_dir)
    return await _run_until_signalled(stack)
