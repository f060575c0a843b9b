"""A guest speaking exactly what the StarlingX guest client sends, end to end.

`nfvha all-in-one` watches a directory; the test plays QEMU (a listening
chardev socket) with the StarlingX guest client's bytes behind it
(tests/data/starlingx-guest-client-transcript.txt): compact JSON,
its int32 parsing of the challenge, its sequence numbers. It registers, is
heartbeated, and is seen failing through the REST API when it stops
answering.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
from conftest import free_port


def _int32(v: int) -> int:
    # What the C client's parse of a JSON number into int32 yields (saturates).
    return 2147483647 if v > 2147483647 else v


class StarlingXGuest:
    """Bytes as the StarlingX guest client 3.0.1 writes them (see transcript)."""

    def __init__(self) -> None:
        self.seq = 0
        self.answering = True
        self.challenges: list[int] = []

    def _line(self, fields: dict) -> bytes:
        self.seq += 1
        msg = {"version": 3, "revision": 1, "msg_type": fields.pop("msg_type"),
               "sequence": self.seq, **fields}
        return json.dumps(msg, separators=(",", ":")).encode() + b"\n"

    def init(self) -> bytes:
        return self._line({"msg_type": "init", "invocation_id": 1804289383,
                           "name": "cgcs.heartbeat", "heartbeat_interval_ms": 400,
                           "vote_secs": 9, "shutdown_notice_secs": 9,
                           "suspend_notice_secs": 9, "resume_notice_secs": 14,
                           "restart_secs": 601, "corrective_action": "reboot"})

    def on_message(self, msg: dict) -> bytes | None:
        if msg.get("msg_type") == "challenge":
            self.challenges.append(msg["heartbeat_challenge"])
            if not self.answering:
                return None
            return self._line({"msg_type": "challenge_response",
                               "heartbeat_response": _int32(msg["heartbeat_challenge"]),
                               "heartbeat_health": "healthy", "corrective_action": "reboot",
                               "log_msg": ""})
        return None


async def test_starlingx_client_registers_is_heartbeated_and_fails(sock_dir: Path) -> None:
    tmp_path = sock_dir
    inst = str(uuid.uuid4())
    port = free_port()
    guest = StarlingXGuest()
    connected = asyncio.Event()

    async def qemu(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        writer.write(guest.init())
        buf = b""
        while data := await reader.read(4096):
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    out = guest.on_message(json.loads(line))
                    if out:
                        writer.write(out)

    sock_path = tmp_path / f"cgcs.heartbeat.{inst}.sock"
    server = await asyncio.start_unix_server(qemu, path=str(sock_path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.cli.main", "all-in-one", "--instances-dir", str(tmp_path),
        "--api", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path / 'db.sqlite'}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    api = f"http://127.0.0.1:{port}"

    async def poll(fn, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if got := fn():
                    return got
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        return None

    try:
        await asyncio.wait_for(connected.wait(), 20)
        rec = await poll(lambda: (r := httpx.get(f"{api}/v1/instances/{inst}", timeout=2))
                         .status_code == 200 and r.json()["heartbeat"]["state"] == "enabled"
                         and r.json(), 20)
        assert rec, "StarlingX guest never enabled"
        assert rec["heartbeat"]["interval_ms"] == 400
        await asyncio.sleep(1.5)
        assert len(guest.challenges) >= 2
        assert all(0 <= c <= 2**31 - 1 for c in guest.challenges)
        events = httpx.get(f"{api}/v1/events", timeout=2).json()
        assert [e for e in events if e["instance_uuid"] == inst] == []

        guest.answering = False
        t0 = time.monotonic()
        loss = await poll(lambda: [e for e in httpx.get(f"{api}/v1/events", timeout=2).json()
                                   if e["instance_uuid"] == inst
                                   and e["kind"] == "heartbeat_loss"], 10)
        assert loss, "stopped StarlingX guest not declared failed"
        # 2 misses at 400 ms: detection within 3 intervals plus polling slack.
        assert time.monotonic() - t0 < 3.0
        assert loss[0]["corrective_action"] == "reboot"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        server.close()
