"""[recovery] mode from nfvha.conf: libvirt and nova add the recovery sink,
none and masakari add none (nfvha never acts); libvirt or nova beside the
masakari sink, or masakari without it, is refused at start with a message
that says what to change. In masakari mode a stop is not sent to Masakari
(its flow would restart the VM)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from oslo_config import cfg

from nfvha.conf import recovery as recovery_opts
from nfvha.conf import reporters as reporter_opts
from nfvha.controller import Controller
from nfvha.controller.recovery.libvirt import LibvirtExecutor
from nfvha.controller.recovery.nova import NovaExecutor
from nfvha.controller.recovery.wiring import build_sink, check_mode
from nfvha.controller.reporters._openstack import connect
from nfvha.controller.reporters.masakari import MasakariReporter
from nfvha.standins.masakari import MasakariStandin
from tests.test_controller_helpers import fault


@pytest.fixture
def conf():
    c = cfg.ConfigOpts()
    recovery_opts.register(c)
    reporter_opts.register(c)
    c([], project="nfvha-test", default_config_files=[])
    return c


@pytest.mark.parametrize("mode,sinks,error", [
    ("libvirt", ["log", "masakari"], "both would act on the same VM"),
    ("nova", ["masakari"], "both would act on the same VM"),
    ("masakari", ["log", "nova"], "needs the masakari sink"),
    ("none", ["recovery"], "not a sink to name"),
])
def test_conflicting_or_missing_sinks_are_refused(mode, sinks, error) -> None:
    with pytest.raises(ValueError, match=error):
        check_mode(mode, sinks)


@pytest.mark.parametrize("mode,sinks", [
    ("none", ["log", "masakari"]), ("masakari", ["masakari"]), ("libvirt", ["log", "nova"]),
    ("nova", ["webhook"]),
])
def test_consistent_modes_pass(mode, sinks) -> None:
    check_mode(mode, sinks)


def test_only_libvirt_and_nova_make_a_recovery_sink(conf) -> None:
    for mode in ("none", "masakari"):
        conf.set_override("mode", mode, group="recovery")
        assert build_sink(conf, bus=object()) is None
    conf.set_override("mode", "libvirt", group="recovery")
    conf.set_override("max_actions", 5, group="recovery")
    conf.set_override("min_uptime_s", 30.0, group="recovery")
    sink = build_sink(conf, bus=object())
    assert sink.name == "recovery" and isinstance(sink.executor, LibvirtExecutor)
    assert (sink.policy.max_actions, sink.policy.window_s, sink.policy.min_uptime_s) == (
        5, 3600.0, 30.0)
    # an attempt may wait min_uptime_s, notify, then act: far above the engine's 10 s
    assert sink.attempt_timeout_s > 30.0 + 10.0 + sink.executor.timeout_s
    conf.set_override("mode", "nova", group="recovery")
    assert isinstance(build_sink(conf, bus=None).executor, NovaExecutor)


def test_the_controller_refuses_to_start_with_two_systems_acting(tmp_path: Path) -> None:
    conf = tmp_path / "nfvha.conf"
    conf.write_text("[reporters]\nenabled = log,masakari\n[recovery]\nmode = nova\n"
                    f"[database]\nconnection = sqlite:///{tmp_path}/c.sqlite\n")
    proc = subprocess.run([sys.executable, "-m", "nfvha.cli.main", "controller",
                           "--config-file", str(conf), "--api", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "[recovery] mode = nova and the masakari sink" in proc.stderr, proc.stderr[-2000:]


async def test_masakari_is_not_sent_a_stop_but_a_reboot(tmp_path: Path) -> None:
    async with MasakariStandin() as m:
        rep = MasakariReporter(connect(auth_type="none", auth={"endpoint": m.url},
                                       instance_ha_endpoint_override=m.url + "/v1"))
        c = Controller(f"sqlite:///{tmp_path}/c.sqlite", [rep])
        await c.start()
        try:
            stop, reboot = fault(corrective_action="stop"), fault(corrective_action="reboot")
            await c.fault(stop)
            await c.fault(reboot)
            await c.wait_idle(20)
            stop_ev, reboot_ev = await c.get_event(stop["id"]), await c.get_event(reboot["id"])
        finally:
            await c.stop()
    [d] = stop_ev["deliveries"]
    assert d["status"] == "delivered"
    assert d["note"] == "skipped: corrective_action stop (Masakari would restart the VM)"
    assert [r.body["notification"]["payload"]["instance_uuid"] for r in m.received] == [
        reboot["instance_uuid"]]
    assert stop_ev["action"] is None and reboot_ev["action"] is None  # nfvha acted on nothing
