"""bench/guest_cpu_vm.py's pure parts: what it reads from the guest's /proc
and the shares it makes of two snapshots. The measurement itself (a real
QEMU guest, minutes) is `make bench-guest-cpu`, not a test."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_guest_cpu_vm",
                                                  ROOT / "bench" / "guest_cpu_vm.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


bench = _bench()

# a process whose comm holds a space and a parenthesis: fields 3.. follow the last ')'
PID_STAT = ("412 (py thon) x) S 1 412 1 0 -1 4194560 1500 0 0 0 "
            "37 12 0 0 20 0 1 0 2150 31000000 2400 18446744073709551615")


def test_pid_stat_gives_utime_plus_stime_after_the_last_parenthesis() -> None:
    assert bench.pid_cpu_ticks(PID_STAT) == (37 + 12, "S", 2150)
    assert bench.pid_comm(PID_STAT) == "py thon) x"


PROC_STAT = """cpu  100 5 40 800 20 3 2 0 30 1
cpu0 100 5 40 800 20 3 2 0 30 1
intr 12345 0 1 2
ctxt 999
cpu_hint_not_a_cpu 1 2 3
"""


def test_proc_stat_total_leaves_guest_time_out_and_idle_takes_iowait() -> None:
    # guest (30) and guest_nice (1) are already inside user and nice
    assert bench.cpu_totals(PROC_STAT) == (100 + 5 + 40 + 800 + 20 + 3 + 2, 820, 1)


def _snap(mono: float, uptime: float, total: int, idle: int, agent: int | None = None,
          start: int = 2150, sched_ns: int | None = None) -> object:
    return bench.Snapshot(mono, uptime, total, idle, 1, agent=agent, agent_start=start,
                          agent_state="S", sched_ns=sched_ns, qemu_host_s=mono / 4,
                          console_bytes=int(mono), challenges=int(mono * 10))


def test_agent_share_is_its_ticks_over_the_guest_clock() -> None:
    # 60 s of guest clock, 6000 ticks; the agent ran 30 ticks (0.3 s): 0.5 %
    a = _snap(100.0, 1000.0, 50_000, 45_000, agent=70, sched_ns=10**9)
    b = _snap(160.0, 1060.0, 56_000, 50_400, agent=100, sched_ns=10**9 + 3 * 10**8)
    got = bench.window_figures(a, b)
    assert got["agent_cpu_s"] == pytest.approx(0.3)
    assert got["agent_pct"] == pytest.approx(0.5)
    assert got["agent_sched_pct"] == pytest.approx(0.5)
    assert got["busy_pct"] == pytest.approx(100 * 600 / 6000)
    assert got["ticks_per_s"] == pytest.approx(100.0)
    assert got["qemu_host_pct"] == pytest.approx(25.0)
    assert got["challenges_per_s"] == pytest.approx(10.0)
    assert got["console_bytes"] == 60


def test_a_window_without_the_agent_has_no_agent_share() -> None:
    got = bench.window_figures(_snap(0.0, 10.0, 0, 0), _snap(60.0, 70.0, 6000, 5900))
    assert "agent_pct" not in got and got["busy_pct"] == pytest.approx(100 / 60)


def test_an_agent_restarted_within_the_window_is_refused() -> None:
    a = _snap(0.0, 10.0, 0, 0, agent=5, start=100)
    b = _snap(60.0, 70.0, 6000, 5900, agent=2, start=7000)
    with pytest.raises(RuntimeError, match="restarted"):
        bench.window_figures(a, b)
