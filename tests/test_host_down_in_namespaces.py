"""A dead compute host is told from a dead compute agent, with real hosts:
the compute agent runs in a network namespace (its management address on a
veth, its bus through it) with 50 simulated guests, the controller in the
root namespace over RabbitMQ (bench/host_down.py does the set-up and prints
the figures). Host down (agent killed, link down): every VM reported
host_down once. Only the agent killed: no host_down, the host silent and
agent-only."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import require_command, require_rabbitmq, require_root

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.system, pytest.mark.slow]


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_host_down",
                                                  ROOT / "bench" / "host_down.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _needs() -> None:
    require_root("network namespaces")
    require_command("ip")
    require_rabbitmq()


async def test_a_dead_host_has_every_vm_reported_host_down_once(sock_dir: Path) -> None:
    _needs()
    out = await _bench().run_case("host", 50, sock_dir, timeout_s=90)
    assert out["reported"] == 50
    assert "no answer to 3 connects" in out["why"]
    # all at once: generous on a loaded 2-core machine (bench: tens of ms)
    assert out["decision_to_last_report_s"] < 5.0, out


async def test_a_dead_agent_on_a_live_host_is_no_vm_fault(sock_dir: Path) -> None:
    _needs()
    out = await _bench().run_case("agent", 50, sock_dir, timeout_s=90)
    assert out["reported"] == 0
    assert (out["state"], out["host_failure"]) == ("silent", "agent_only")
    assert "refused (its kernel answers)" in out["why"]
