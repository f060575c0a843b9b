"""The host-failure pieces as a deployment gets them: `nfvha all-in-one` /
`controller` / `compute` built from the config (start_stack) carry [hosts]
into the controller's monitor and [compute] management_address into the
agent's alive; the Nova signal asks Nova's service list over real HTTP."""
from __future__ import annotations

from pathlib import Path

from conftest import until
from oslo_config import cfg

from nfvha import conf as nfvha_conf
from nfvha.cli.services import start_stack
from nfvha.controller.hostfailure import UNKNOWN, UP, NovaComputeService
from nfvha.controller.reporters._openstack import connect
from nfvha.standins.nova import NovaStandin


async def test_start_stack_wires_hosts_options_and_the_reported_address(
        sock_dir: Path) -> None:
    conf = cfg.ConfigOpts()
    nfvha_conf.register(conf)
    conf([], default_config_files=[])
    conf.set_override("host", "cmp-wired")
    conf.set_override("agent_report_interval_s", 0.1, "heartbeat")
    conf.set_override("spool_dir", "", "heartbeat")
    conf.set_override("management_address", "192.0.2.77", "compute")
    conf.set_override("probe_port", 2222, "hosts")
    conf.set_override("enabled", ["log"], "reporters")
    (sock_dir / "i").mkdir()
    stack = await start_stack(conf, controller=True, compute=True, transport_url="inproc://",
                              db_url=f"sqlite:///{sock_dir / 'c.db'}",
                              instances_dir=str(sock_dir / "i"), api="")
    try:
        mon = stack.controller.host_failure
        assert mon is not None and mon.probe is not None and mon.probe.port == 2222
        assert stack.compute.management_address == "192.0.2.77"
        await until(lambda: mon.management_address("cmp-wired") == "192.0.2.77", 10)
        hosts = {h["host"]: h for h in await stack.controller.list_hosts()}
        assert hosts["cmp-wired"]["management_address"] == "192.0.2.77"
        assert hosts["cmp-wired"]["host_failure"] is None           # up: nothing asked
    finally:
        await stack.stop()


async def test_nova_signal_reads_the_compute_service_list() -> None:
    async with NovaStandin(compute_hosts={"cmp-1"}) as nova:
        svc = NovaComputeService(lambda: connect(
            auth_type="none", auth={"endpoint": nova.url},
            compute_endpoint_override=nova.url + "/v2.1"))
        try:
            verdict, detail = await svc.check("cmp-1")
            assert (verdict, detail) == (UP, "Nova: nova-compute up")
            assert (await svc.check("cmp-9"))[0] == UNKNOWN           # Nova knows no such
            assert [r.path for r in nova.attempts].count("/v2.1/os-services") == 2
        finally:
            await svc.aclose()
