"""The soak bench's pure parts (bench/soak.py): the memory slope and summary,
the RSS parser and the argument checks. The soak itself (30 minutes, many
processes) is `make soak`, not a test."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _soak() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


soak = _soak()


def test_slope_is_megabytes_per_hour_by_least_squares() -> None:
    # 1 MB more every 10 minutes: 6 MB/h, whatever the noise around the line
    pts = [(600.0 * i, 100.0 + i + (0.2 if i % 2 else -0.2)) for i in range(7)]
    assert soak.slope_per_hour(pts) == pytest.approx(6.0, abs=0.2)
    assert soak.slope_per_hour([(0.0, 50.0), (1800.0, 50.0)]) == 0.0
    assert soak.slope_per_hour([(0.0, 50.0), (3600.0, 40.0)]) == pytest.approx(-10.0)


def test_slope_needs_two_distinct_times() -> None:
    assert soak.slope_per_hour([]) is None
    assert soak.slope_per_hour([(5.0, 1.0)]) is None
    assert soak.slope_per_hour([(5.0, 1.0), (5.0, 2.0)]) is None


def test_memory_summary_tells_warm_up_growth_from_a_leak() -> None:
    # grows in the first half, then flat: the second-half slope is 0
    warm = [(60.0 * i, 100.0 + min(i, 5)) for i in range(11)]
    # grows all the way: the second-half slope is the leak (1 MB/min = 60 MB/h)
    leak = [(60.0 * i, 100.0 + i) for i in range(11)]
    m = soak.memory_summary({"warm": warm, "leak": leak, "none": []})
    assert set(m) == {"warm", "leak"}
    assert m["warm"]["start_mb"] == 100.0 and m["warm"]["end_mb"] == 105.0
    assert m["warm"]["max_mb"] == 105.0
    assert m["warm"]["slope_mb_per_h"] > 0
    assert m["warm"]["slope_2nd_half_mb_per_h"] == 0.0
    assert m["leak"]["slope_mb_per_h"] == pytest.approx(60.0)
    assert m["leak"]["slope_2nd_half_mb_per_h"] == pytest.approx(60.0)


def test_rss_is_read_from_proc_status() -> None:
    status = "Name:\tpython3\nVmPeak:\t  300000 kB\nVmRSS:\t  123456 kB\nThreads:\t4\n"
    assert soak.rss_kb(status) == 123456
    assert soak.rss_kb("Name:\tzombie\nState:\tZ (zombie)\n") is None
    mb = soak.read_rss_mb(1) if Path("/proc/1/status").exists() else None
    assert mb is None or mb > 0


def test_quantiles_of_round_trips() -> None:
    q = soak.quantiles([float(i) for i in range(1, 101)])
    assert q == {"n": 100, "p50": 51.0, "p99": 100.0, "max": 100.0}
    assert soak.quantiles([]) == {"n": 0, "p50": None, "p99": None, "max": None}


def test_arguments_default_to_the_30_minute_form() -> None:
    a = soak.parse_args([])
    assert (a.minutes, a.guests, a.interval_ms, a.window_s) == (30.0, 500, 100, 60.0)
    a = soak.parse_args(["--minutes", "3", "--json"])
    assert a.minutes == 3.0 and a.json


def test_a_window_longer_than_the_sample_ring_is_refused(capsys) -> None:
    # each session keeps its last 1024 round trips: 100 s at 100 ms
    with pytest.raises(SystemExit):
        soak.parse_args(["--window-s", "120"])
    assert "--window-s" in capsys.readouterr().err
    assert soak.parse_args(["--window-s", "120", "--interval-ms", "1000"]).window_s == 120
    with pytest.raises(SystemExit):
        soak.parse_args(["--minutes", "0"])


def test_quantiles_match_the_nearest_rank_of_the_sorted_samples() -> None:
    import random

    sys.path.insert(0, str(ROOT / "bench"))
    from _common import pct

    rnd = random.Random(7)
    xs = [round(rnd.expovariate(1 / 3.0), 2) for _ in range(5000)] + [1500.25, 2500.5]
    q = soak.quantiles(xs)
    assert q["n"] == len(xs) and q["max"] == 2500.5
    assert q["p50"] == pytest.approx(pct(xs, 0.5), abs=0.011)
    assert q["p99"] == pytest.approx(pct(xs, 0.99), abs=0.011)
    # beyond the histogram's top the samples are kept exactly
    assert soak.quantiles([2000.0, 3000.0, 4000.0])["p50"] == 3000.0


def test_a_second_half_of_two_samples_gives_no_slope() -> None:
    # a 3-minute run: start and three windows; its second half is one step
    m = soak.memory_summary({"agent": [(0.0, 112.3), (60.0, 114.3), (120.0, 112.2),
                                       (180.0, 116.4)]})
    assert m["agent"]["slope_2nd_half_mb_per_h"] is None
    assert m["agent"]["slope_mb_per_h"] is not None
