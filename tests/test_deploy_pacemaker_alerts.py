"""Reading Pacemaker's alert lines into failure/restart timestamps (no cluster).

The alert agent's line format is the one written by pacemaker.ALERT_SCRIPT:
epoch usec kind rsc task rc interval_ms target_rc status.
"""
from __future__ import annotations

import time

from nfvha.verify.deploy.pacemaker import PacemakerCluster


def _cluster(tmp_path, lines: list[str]) -> PacemakerCluster:
    c = PacemakerCluster(tmp_path)
    c.alert_log.parent.mkdir(parents=True)
    c.alert_log.write_text("".join(line + "\n" for line in lines))
    return c


def _line(wall: float, rsc: str, task: str, rc: int, interval: int = 0) -> str:
    usec = int(round((wall % 1) * 1e6))
    return f"{int(wall)} {usec} resource {rsc} {task} {rc} {interval} 0 0"


def test_failure_and_restart_are_found_after_the_fault(tmp_path):
    now = time.time()
    mono_now = time.monotonic()
    c = _cluster(tmp_path, [
        _line(now - 5.0, "web", "start", 0),
        _line(now - 4.9, "web", "monitor", 7, 100),     # an older failure: not ours
        _line(now - 4.8, "web", "start", 0),
        _line(now - 4.7, "other", "monitor", 1, 100),   # another resource
        _line(now - 0.90, "web", "monitor", 1, 100),    # ours
        _line(now - 0.89, "web", "stop", 0),
        _line(now - 0.60, "web", "start", 0),
        "garbage line",
        "1795 12",                                       # torn line
    ])
    since = mono_now - 1.0
    det = c.failure_detected("web", since)
    back = c.restarted("web", since)
    assert det is not None and back is not None
    assert det.task == "monitor" and det.rc == 1 and det.interval_ms == 100 and det.failed
    assert abs((det.mono - since) - 0.10) < 0.02
    assert abs((back.mono - det.mono) - 0.30) < 0.001
    assert c.failure_detected("other", since) is None


def test_no_failure_means_no_detection_and_no_restart(tmp_path):
    now = time.time()
    c = _cluster(tmp_path, [_line(now - 2, "web", "start", 0),
                            _line(now - 1.9, "web", "monitor", 0, 100)])
    since = time.monotonic() - 3
    assert c.failure_detected("web", since) is None
    assert c.restarted("web", since) is None


def test_failure_without_restart_yet(tmp_path):
    now = time.time()
    c = _cluster(tmp_path, [_line(now - 0.2, "web", "monitor", 1, 100)])
    since = time.monotonic() - 0.5
    assert c.failure_detected("web", since) is not None
    assert c.restarted("web", since) is None


def test_missing_alert_log_is_no_events(tmp_path):
    assert PacemakerCluster(tmp_path).op_events() == []
