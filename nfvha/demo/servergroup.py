"""The demo's server group: the demo guests form one group and talk.

Each demo guest gets a second "virtio-serial port", ``cgcs.messaging``
(a pty behind ``cgcs.messaging.<uuid>.sock``, the QEMU stand-in), and a
real ``nfvha.guest.group.GroupClient`` on it, driven from the demo's event
loop (``add_reader``). The group is set through the REST API
(``PUT /v1/server-groups/demo``), with the instance uuids as members: the
socket names carry the uuids, so the controller links the heartbeat state
of each member to its messaging channel and tells the peers when a member
fails. Shown: a broadcast from every member reaching all the others (with
per-peer latency), the peers' notifications about the faults, a status query.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nfvha.demo.qemu_pty import PtyChannel
from nfvha.guest.group import GroupClient

GROUP_ID = "demo"


@dataclass
class Member:
    uuid: str
    channel: PtyChannel
    client: GroupClient | None = None
    received: list[tuple[float, str, str]] = field(default_factory=list)  # mono, from, data


@dataclass
class Note:
    to: str
    mono: float
    data: dict[str, Any]


class DemoGroup:
    def __init__(self, instances_dir: Path, devices_dir: Path, uuids: list[str],
                 api_url: str) -> None:
        self.members = [Member(u, PtyChannel(instances_dir / f"cgcs.messaging.{u}.sock",
                                             devices_dir / f"{u}.messaging")) for u in uuids]
        self.api_url = api_url
        self.notes: list[Note] = []
        self.broadcasts: list[dict[str, Any]] = []
        self.status: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()

    async def start(self, connected: Callable[[], bool] = lambda: True) -> None:
        """`connected()`: the compute agent holds every messaging channel (a
        pty's bytes are dropped while QEMU's socket has no client)."""
        import httpx

        self._loop = asyncio.get_running_loop()
        for m in self.members:
            await m.channel.start()
            m.client = GroupClient(str(m.channel.device_link))
            m.client.on_broadcast(self._on_broadcast(m))
            m.client.on_notification(self._on_notification(m))
            self._loop.add_reader(m.client.fileno(), self._poll(m.client))
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5) as c:
            r = await c.put(f"/v1/server-groups/{GROUP_ID}",
                            json={"name": "demo", "members": [m.uuid for m in self.members]})
            r.raise_for_status()
            deadline = time.monotonic() + 20
            while True:  # placement: the compute agent announces the channels it found
                g = (await c.get(f"/v1/server-groups/{GROUP_ID}")).json()
                if all(x["host"] for x in g["members"]) and connected():
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server group members not placed: {g}")
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for m in self.members:
            if m.client is not None:
                if self._loop is not None:
                    with contextlib.suppress(Exception):
                        self._loop.remove_reader(m.client.fileno())
                m.client.close()
            await m.channel.close()

    # -- callbacks (run from GroupClient.poll on the loop) ------------------------------
    def _poll(self, client: GroupClient) -> Callable[[], None]:
        def poll() -> None:
            with contextlib.suppress(Exception):  # the demo's view must not die of one read
                client.poll(0)
        return poll

    def _on_broadcast(self, m: Member) -> Callable[[str, str], None]:
        def cb(source: str, data: str) -> None:
            m.received.append((time.monotonic(), source, data))
            self._changed.set()
        return cb

    def _on_notification(self, m: Member) -> Callable[[dict], None]:
        def cb(data: dict) -> None:
            self.notes.append(Note(m.uuid, time.monotonic(), data))
            self._changed.set()
        return cb

    async def _until(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))
        return True

    # -- the show ------------------------------------------------------------------------
    async def broadcast_from_each(self) -> list[dict[str, Any]]:
        """One broadcast from every member; who got it, and how fast."""
        for sender in self.members:
            assert sender.client is not None
            text = f"hello from {sender.uuid[:8]} at {time.time():.6f}"
            t0 = time.monotonic()
            sender.client.broadcast(text)
            peers = [m for m in self.members if m is not sender]
            await self._until(lambda p=peers, s=sender.uuid, x=text: all(
                _got(m, s, x) is not None for m in p), 5)
            latency = {m.uuid: round((t - t0) * 1000, 3) for m in peers
                       if (t := _got(m, sender.uuid, text)) is not None}
            self.broadcasts.append({"from": sender.uuid, "data": text,
                                    "delivered_to": sorted(latency),
                                    "latency_ms": latency,
                                    "not_delivered": sorted(m.uuid for m in peers
                                                            if m.uuid not in latency)})
        return self.broadcasts

    def failure_seen(self, about: str, heartbeat: str, after: float) -> dict[str, float]:
        """Peers told (since `after`) that `about`'s heartbeat became `heartbeat`:
        peer → ms after `after`."""
        out: dict[str, float] = {}
        for n in self.notes:
            p = n.data.get("payload", {})
            if n.mono >= after and p.get("instance_id") == about \
                    and p.get("heartbeat") == heartbeat and n.to not in out:
                out[n.to] = round((n.mono - after) * 1000, 3)
        return out

    async def wait_failure_seen(self, about: str, heartbeat: str, after: float,
                                timeout: float = 5.0) -> dict[str, float]:
        others = {m.uuid for m in self.members if m.uuid != about}
        await self._until(lambda: set(self.failure_seen(about, heartbeat, after)) >= others,
                          timeout)
        return self.failure_seen(about, heartbeat, after)

    async def query_status(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """A status query from the first member (its own state first)."""
        client = self.members[0].client
        assert client is not None
        done: list[tuple[list[dict], bool]] = []
        client.start_status(timeout, lambda members, complete: done.append((members, complete)))
        deadline = time.monotonic() + timeout + 1
        while not done and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            client.poll(0)  # also ends the query at its deadline
        self.status = done[0][0] if done else []
        return self.status

    def notifications_json(self, anchor: Callable[[float], str | None]) -> list[dict[str, Any]]:
        out = []
        for n in self.notes:
            p = n.data.get("payload", {})
            out.append({"to": n.to, "about": p.get("instance_id"),
                        "event_type": n.data.get("event_type"), "heartbeat": p.get("heartbeat"),
                        "state": p.get("state"), "received_at": anchor(n.mono)})
        return out


def _got(m: Member, source: str, text: str) -> float | None:
    """When `m` read the broadcast `text` from `source` (None: not yet)."""
    return next((t for t, src, d in m.received if d == text and src == source), None)
