"""action_notify event script: `script <revocable|irrevocable> <event_type>`, exit 0 = accept."""
from __future__ import annotations

import os
import time
from typing import Any

from nfvha.guest.agent import run_event_script
from nfvha.protocol.guest import RunEventScript


def _script(tmp_path: Any, body: str) -> str:
    path = os.path.join(str(tmp_path), "vote.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


def req(kind: str = "revocable", event: str = "reboot", timeout_ms: int = 3000) -> RunEventScript:
    return RunEventScript(1, event, kind, timeout_ms)


async def test_exit_0_accepts_and_nonzero_rejects_with_arguments(tmp_path: Any) -> None:
    script = _script(tmp_path, '[ "$1" = revocable ] || exit 9\n'
                               '[ "$2" = live_migrate_begin ] && { echo busy >&2; exit 1; }\n'
                               'exit 0')
    assert await run_event_script(script, req(event="stop")) == ("accept", "")
    assert await run_event_script(script, req(event="live_migrate_begin")) == ("reject", "busy")


async def test_notice_is_complete_whatever_the_exit(tmp_path: Any) -> None:
    script = _script(tmp_path, "exit 1")
    assert (await run_event_script(script, req(kind="irrevocable")))[0] == "complete"


async def test_script_too_slow_gives_no_result_so_the_machine_answers_timeout(
        tmp_path: Any) -> None:
    script = _script(tmp_path, "exec sleep 30")
    start = time.monotonic()
    assert await run_event_script(script, req(timeout_ms=200)) == (None, "")
    assert time.monotonic() - start < 5


async def test_no_script_answers_unknown_like_the_starlingx_client() -> None:
    assert (await run_event_script(None, req()))[0] == "unknown"


async def test_missing_script_is_an_error_answer(tmp_path: Any) -> None:
    result, msg = await run_event_script(os.path.join(str(tmp_path), "nope"), req())
    assert result == "error" and msg
