"""The controller's server-group messaging service: membership + routing on the bus.

- Membership (``ServerGroups``): groups from the REST API (persisted in the
  store, so a restart keeps them), from the config file, and from Nova
  (openstacksdk) when a cloud is configured; instance placement from the
  compute agents (``sg_instances``, ``hello``/``instance_state``) and Nova.
- Routing: a guest's broadcast goes, with one ``sg_deliver`` cast per
  compute host, only to the other members of the sender's groups; a status
  query is answered with one ``status_response`` per member and a
  ``status_response_done``; Nova notifications and nfvha heartbeat changes
  of a member become ``notification`` messages for its peers.
- Everything here is in memory and never waits for the store on the hot
  path (broadcasts); REST writes go to the store first, then to memory.

Several controllers on one store and bus are equal (any of them may get a
compute agent's broadcast or status query), so each holds the whole view:

- placement and links: the compute agents send them to every controller
  (``fanout_controller``), as snapshots of their host, again when they
  change, every ``RESYNC_S`` and when a controller asks for a resync; each
  controller also writes them to the store (``server_group_placements``),
  so one that starts or restarts loads them before it serves;
- REST groups: stored first; the controller that wrote tells the others
  (``sg_groups_changed``), who reload the groups from the store; a cheap
  fingerprint of the stored groups, read every ``GROUPS_POLL_S``, is the
  backstop for a signal lost (its sender killed, a bus outage);
- members' state (heartbeat verdicts, Nova's notifications): each reaches
  one controller, which tells the peers in the group (notification) and
  the other controllers (``sg_member_changed``), who only record it; a
  controller that starts loads the heartbeat states from the store, and
  every ``STATES_REFRESH_S`` takes those on record that settled, should a
  change told on the bus have been lost.

Instance names: a compute agent knows an instance by its messaging socket
name (``cgcs.messaging.<name>.sock``). Without Nova telling us its uuid, a
name is recorded with itself as uuid; a later Nova record with that name
replaces the placeholder.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuidlib
from datetime import timedelta
from typing import Any, Awaitable, Callable, Optional

from nfvha.controller import nova_notifications as nn
from nfvha.controller import servergroup_store as sgstore
from nfvha.controller.servergroups import (
    MAX_ID,
    ServerGroups,
    Targets,
    is_text,
    load_config,
    load_from_nova,
)
from nfvha.controller.timeutil import utcnow
from nfvha.protocol import sgwire

LOG = logging.getLogger(__name__)

Db = Callable[..., Awaitable[Any]]  # runs a Store method in the DB thread
MAX_INSTANCES_PER_HOST = 10000
# How often the stored REST groups' fingerprint is read: a change signal
# lost on the bus is made up for within this (a read of ids and times).
GROUPS_POLL_S = 1.0
SAVE_RETRY_S = 1.0  # placements not written (store away): tried again after this
# Members' heartbeat states re-read from the store this often (a change
# another controller told us of may have been lost on the bus), leaving
# alone those written in the last SETTLE_S (their notification may still
# be on its way, from this controller too) or changed here since the read.
STATES_REFRESH_S = 10.0
SETTLE_S = 2.0
# Member fields another controller may tell us (sg_member_changed)
MEMBER_FIELDS = ("host", "state", "task_state", "power_state", "display_name", "heartbeat")


class GroupLimit(ValueError):
    """One group more than [servergroup] max_groups (the REST API's 403)."""


class ServerGroupService:
    def __init__(self, bus: Any = None, fanout_min_hosts: int = 3) -> None:
        self.bus = bus
        # One message to many hosts: a single fanout publish (each compute
        # takes its own part) instead of one cast per host, once it reaches
        # at least this many hosts and half of the known ones (0 = never).
        # Publishing costs the controller CPU per message; this keeps a
        # broadcast to ten computes as cheap as one to one.
        self.fanout_min_hosts = fanout_min_hosts
        self._hosts: set[str] = set()
        self.groups = ServerGroups()
        # REST bounds ([servergroup] max_groups, max_members, max_name_length):
        # what one client may make the controller hold and show on every GET
        self.max_groups = 1000
        self.max_members = 100
        self.max_name_length = MAX_ID
        self.store: Any = None
        self._db: Optional[Db] = None
        self._nova_task: Optional[asyncio.Task[None]] = None
        # Names this controller's messages to the other controllers (its own
        # fanouts come back to it too: they are skipped by this)
        self.peer_id = uuidlib.uuid4().hex
        # Placement snapshots: the latest each host sent ({name: uuid or
        # None}) and what the store holds as far as we know; hosts whose
        # two differ wait for the writer task.
        self._heard: dict[str, dict[str, Optional[str]]] = {}
        self._saved: dict[str, dict[str, Optional[str]]] = {}
        self._unsaved: set[str] = set()
        self._save_wake = asyncio.Event()
        self._groups_fp: Optional[str] = None
        # a reload from the store and a REST write here, one at a time: a
        # reload that read before our write must not undo it in memory
        self._groups_lock = asyncio.Lock()
        self._state_touched: dict[str, float] = {}  # uuid -> monotonic of its last change
        self._tasks: list[asyncio.Task[None]] = []
        self.counters = {"broadcasts": 0, "deliveries": 0, "status_queries": 0,
                         "notifications": 0, "refused": 0, "nova_errors": 0,
                         "peer_changes": 0, "groups_reloaded": 0, "store_errors": 0}
        # hooks for tests and the demo: cb(kind, source, targets, message, mono)
        self.listeners: list[Callable[[str, str, Targets, dict[str, Any], float], None]] = []

    # --- life cycle ------------------------------------------------------------------
    async def start(self, store: Any, db: Db, config_groups: Any = None) -> None:
        """Loads persisted groups, known instances (heartbeat state) and
        placements, then config groups; then keeps the groups and the
        stored placements in step with the other controllers."""
        self.store, self._db = store, db
        await self._reload_groups()
        for inst in await db(store.list_instances):
            self.groups.update_instance(inst["uuid"], host=inst["host"],
                                        heartbeat=inst["heartbeat"]["state"])
        for name, host, uuid in await db(sgstore.load_placements, store.engine):
            self._saved.setdefault(host, {})[name] = uuid
            try:
                self._place(host, name)
                if uuid is not None and uuid != name:
                    self._link(host, name, uuid)
            except ValueError as exc:
                LOG.warning("stored placement of %r ignored: %s", name, exc)
        # as if each host had said it: its next list keeps the stored links
        self._heard = {host: dict(names) for host, names in self._saved.items()}
        if config_groups:
            load_config(self.groups, config_groups)
        self._tasks = [asyncio.create_task(self._groups_loop(), name="nfvha-sg-groups"),
                       asyncio.create_task(self._save_loop(), name="nfvha-sg-placements"),
                       asyncio.create_task(self._states_loop(), name="nfvha-sg-states")]

    async def _reload_groups(self) -> None:
        """The REST groups as the store has them now (another controller may
        have written): added, replaced, and gone ones removed."""
        assert self._db is not None
        async with self._groups_lock:
            fp = await self._db(sgstore.groups_fingerprint, self.store.engine)
            stored = await self._db(self.store.list_server_groups)  # after: never older
            ids = set()
            for g in stored:
                ids.add(g["id"])
                if self.groups.origin(g["id"]) == "nova":
                    continue  # Nova owns it (stored before Nova had it)
                try:
                    self.groups.set_group(g["id"], g["name"], g["members"],
                                          origin=g["origin"])
                except ValueError as exc:
                    LOG.warning("stored server group %r ignored: %s", g.get("id"), exc)
            for g in self.groups.all_groups():
                if g.id not in ids and self.groups.origin(g.id) == "api":
                    self.groups.remove_group(g.id)
            self._groups_fp = fp
            self.counters["groups_reloaded"] += 1

    async def _states_loop(self) -> None:
        assert self._db is not None
        while True:
            await asyncio.sleep(STATES_REFRESH_S)
            try:
                await self.refresh_states()
            except asyncio.CancelledError:
                raise
            except Exception:  # store away: the next round
                self.counters["store_errors"] += 1
                LOG.warning("members' heartbeat states not re-read from the store",
                            exc_info=True)

    async def refresh_states(self) -> int:
        """Heartbeat states on record that differ from ours, and are neither
        fresh nor changed here meanwhile, are taken (nobody is told: whoever
        heard the change told the peers). Returns how many."""
        assert self._db is not None
        began = time.monotonic()
        rows = await self._db(sgstore.member_states, self.store.engine,
                              utcnow() - timedelta(seconds=SETTLE_S))
        taken = 0
        for uuid, host, state in rows:
            if self._state_touched.get(uuid, 0.0) >= began:
                continue
            rec = self.groups.instance(uuid)
            if rec is not None and rec.heartbeat == state and rec.host == host:
                continue
            try:
                self.groups.update_instance(uuid, host=host, heartbeat=state)
            except ValueError:
                continue
            taken += 1
        # older marks can never matter again: the next read begins later
        self._state_touched = {u: t for u, t in self._state_touched.items() if t >= began}
        if taken:
            LOG.info("%d members' heartbeat states taken from the store", taken)
        return taken

    async def _groups_loop(self) -> None:
        assert self._db is not None
        failing = False
        while True:
            await asyncio.sleep(GROUPS_POLL_S)
            try:
                fp = await self._db(sgstore.groups_fingerprint, self.store.engine)
                if fp != self._groups_fp:
                    LOG.info("server groups changed in the store: reloading them")
                    await self._reload_groups()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception:  # store away: what we hold stays; say it once
                self.counters["store_errors"] += 1
                if not failing:
                    LOG.exception("server groups not read from the store")
                failing = True

    def start_nova_sync(self, conn_factory: Callable[[], Any], period_s: float) -> None:
        """Groups and placement from Nova now and every ``period_s``."""
        async def loop() -> None:
            conn = None
            while True:
                try:
                    if conn is None:
                        conn = await asyncio.to_thread(conn_factory)
                    # the sdk is blocking; the in-memory update happens on the loop
                    fresh = ServerGroups()
                    await asyncio.to_thread(load_from_nova, conn, fresh, False)
                    self._merge_from_nova(fresh)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.counters["nova_errors"] += 1
                    conn = None
                    LOG.exception("loading server groups from Nova failed")
                await asyncio.sleep(period_s)

        self._nova_task = asyncio.create_task(loop(), name="nfvha-nova-servergroups")

    def _merge_from_nova(self, fresh: ServerGroups) -> None:
        seen = set()
        for g in fresh.all_groups():
            seen.add(g.id)
            self.groups.set_group(g.id, g.name, g.members, origin="nova")
            for m in g.members:
                rec = fresh.instance(m)
                if rec is None:
                    continue
                if rec.name:
                    self._drop_placeholder(rec.name, rec.uuid)
                self.groups.update_instance(
                    rec.uuid, name=rec.name, host=rec.host, state=rec.state,
                    task_state=rec.task_state, power_state=rec.power_state,
                    display_name=rec.display_name)
        for g in self.groups.all_groups():
            if g.id not in seen and self.groups.origin(g.id) == "nova":
                self.groups.remove_group(g.id)

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._nova_task] if self._nova_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._nova_task = [], None

    # --- placement -------------------------------------------------------------------
    def _drop_placeholder(self, name: str, uuid: str) -> None:
        old = self.groups.instance(name)
        if old is not None and old.uuid == name and name != uuid:
            self.groups.remove_instance(name)

    def _place(self, host: str, name: str) -> None:
        self._hosts.add(host)
        rec = self.groups.instance(name)
        if rec is None:
            self.groups.update_instance(name, name=name, host=host)
        elif rec.host != host:
            self.groups.update_instance(rec.uuid, host=host)

    async def sg_instances(self, host: Any, instances: Any) -> dict[str, Any]:
        """A compute agent lists the messaging channels it serves."""
        if _bad_host(host) or not isinstance(instances, list) \
                or len(instances) > MAX_INSTANCES_PER_HOST:
            self.counters["refused"] += 1
            return {"ok": False, "error": "host must be a string, instances a list of at "
                                          f"most {MAX_INSTANCES_PER_HOST}"}
        placed = refused = 0
        old = self._heard.get(host, {})
        heard: dict[str, Optional[str]] = {}
        for name in instances:
            # one bad name is refused alone (a list or object would not even hash)
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_ID:
                refused += 1
                continue
            try:
                self._place(host, name)
                placed += 1
            except ValueError:
                refused += 1
                continue
            heard[name] = old.get(name)  # its link comes with sg_links
        self.counters["refused"] += refused
        self._heard_from(host, heard)
        return _with_refused({"ok": True, "instances": placed}, refused)

    async def sg_links(self, host: Any, links: Any) -> dict[str, Any]:
        """A compute agent names the VM behind each messaging channel:
        {instance name: instance uuid}, read from the QEMU at the other end
        of the socket (compute/qemu_peer.py). Without Nova this is what ties a
        VM's heartbeat (by uuid) to its messaging channel (by name)."""
        if _bad_host(host) or not isinstance(links, dict) \
                or len(links) > MAX_INSTANCES_PER_HOST:
            self.counters["refused"] += 1
            return {"ok": False, "error": "host must be a string, links an object of at "
                                          f"most {MAX_INSTANCES_PER_HOST}"}
        linked = refused = 0
        heard = dict(self._heard.get(host, {}))
        for name, uuid in links.items():
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_ID \
                    or not sgwire.is_uuid(uuid) or name == uuid:
                refused += 1
                continue
            uuid = uuid.lower()
            try:
                self._link(host, name, uuid)
                linked += 1
            except ValueError:
                refused += 1
                continue
            heard[name] = uuid
        self.counters["refused"] += refused
        self._heard_from(host, heard)
        return _with_refused({"ok": True, "linked": linked}, refused)

    def _link(self, host: str, name: str, uuid: str) -> None:
        self._drop_placeholder(name, uuid)
        self.groups.update_instance(uuid, name=name, host=host)

    def _heard_from(self, host: str, heard: dict[str, Optional[str]]) -> None:
        """The latest placement snapshot of `host`: written to the store by
        the writer task, if it differs from what the store has."""
        self._heard[host] = heard
        if heard != self._saved.get(host, {}):
            self._unsaved.add(host)
            self._save_wake.set()

    async def _save_loop(self) -> None:
        # One writer: a burst of snapshots costs one write per host, and a
        # fanout handler never waits for the store.
        assert self._db is not None
        while True:
            await self._save_wake.wait()
            self._save_wake.clear()
            for host in sorted(self._unsaved):
                heard = self._heard.get(host, {})
                saved = self._saved.get(host, {})
                changed = {n: u for n, u in heard.items() if n not in saved or saved[n] != u}
                removed = [n for n in saved if n not in heard]
                try:
                    await self._db(sgstore.save_host_placements, self.store.engine, host,
                                   changed, removed)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.counters["store_errors"] += 1
                    LOG.exception("placements of %s not stored; trying again", host)
                    await asyncio.sleep(SAVE_RETRY_S)
                    self._save_wake.set()
                    break
                self._saved[host] = heard
                if self._heard.get(host) is heard:  # nothing newer meanwhile
                    self._unsaved.discard(host)

    # --- guest requests (relayed by compute agents) ------------------------------------
    async def sg_broadcast(self, host: Any, source_instance: Any, data: Any,
                           **_ignored: Any) -> dict[str, Any]:
        err = _check_source(host, source_instance) or sgwire.check_broadcast_data(data)
        if err:
            self.counters["refused"] += 1
            LOG.warning("broadcast from %r refused: %s", host, err)
            return {"ok": False, "error": err}
        self._place(host, source_instance)  # the sender is where it speaks from
        self.counters["broadcasts"] += 1
        targets = self.groups.route_broadcast(source_instance, data)
        msg = sgwire.broadcast_to_guest(data, source_instance)
        await self._send(targets, [msg])
        self._tell("broadcast", source_instance, targets, msg)
        return {"ok": True, "targets": sum(len(v) for v in targets.values())}

    async def sg_status_query(self, host: Any, source_instance: Any, seq: Any,
                              **_ignored: Any) -> dict[str, Any]:
        err = _check_source(host, source_instance)
        if not err and (not isinstance(seq, int) or isinstance(seq, bool)
                        or not 0 <= seq <= sgwire.MAX_SEQ):
            err = "seq must be an integer"
        if err:
            self.counters["refused"] += 1
            return {"ok": False, "error": err}
        self._place(host, source_instance)
        self.counters["status_queries"] += 1
        members = self.groups.status(source_instance)
        answer = sgwire.status_answer(seq, members)
        await self._send({host: [source_instance]}, answer)
        self._tell("status", source_instance, {host: [source_instance]},
                   {"seq": seq, "members": members})
        return {"ok": True, "members": len(members)}

    # --- state changes peers hear about ----------------------------------------------
    async def on_heartbeat(self, host: str, uuid: str, state: str, at: Optional[str],
                           health: Optional[str] = None) -> None:
        """nfvha's heartbeat state of an instance (instance_state / hello)."""
        try:
            rec = self.groups.instance(uuid)
            if rec is None or rec.host != host:
                self.groups.update_instance(rec.uuid if rec else uuid, host=host)
            targets, data = self.groups.on_heartbeat(
                uuid, state, at or _utc_now(), health)
        except ValueError as exc:
            LOG.warning("heartbeat state of %r not applied to server groups: %s", uuid, exc)
            return
        if data is not None:
            self._state_touched[uuid] = time.monotonic()
            await self._notify(uuid, targets, data)
            await self._tell_controllers("sg_member_changed", uuid=uuid, host=host,
                                         heartbeat=state)

    async def on_nova_notification(self, note: dict[str, Any]) -> None:
        """A raw Nova notification (the controller parses once and calls
        on_nova_change; this is for callers with only the service)."""
        try:
            change = nn.from_message(note)
        except nn.NotificationError as exc:
            self.counters["refused"] += 1
            LOG.warning("Nova notification ignored: %s", exc)
            return
        if change is not None:
            await self.on_nova_change(change)

    async def on_nova_change(self, change: nn.InstanceChange) -> None:
        try:
            targets, data = self.groups.on_nova_change(change)
        except ValueError as exc:
            self.counters["refused"] += 1
            LOG.warning("Nova notification ignored: %s", exc)
            return
        await self._notify(change.uuid, targets, data)
        await self._tell_controllers(
            "sg_member_changed", uuid=change.uuid, host=change.host, state=change.state,
            task_state=change.task_state, power_state=change.power_state,
            display_name=change.display_name)

    # --- the other controllers ------------------------------------------------------
    async def _tell_controllers(self, method: str, **kwargs: Any) -> None:
        fanout = getattr(self.bus, "fanout_controller", None)
        if fanout is None:  # a bus that reaches only compute agents (tests)
            return
        try:
            await fanout(method, by=self.peer_id, **kwargs)
        except Exception:  # they catch up: the groups' poll, the next state
            LOG.exception("other controllers not told (%s)", method)

    async def sg_groups_changed(self, by: Any = None, **_ignored: Any) -> dict[str, Any]:
        """Another controller wrote a REST group: reload them from the store."""
        if by == self.peer_id or self._db is None:
            return {"ok": True, "reloaded": False}
        await self._reload_groups()
        return {"ok": True, "reloaded": True}

    async def sg_member_changed(self, by: Any = None, uuid: Any = None,
                                **fields: Any) -> dict[str, Any]:
        """Another controller heard a member's state change (and told its
        peers): recorded here, told to nobody."""
        if by == self.peer_id:
            return {"ok": True, "applied": False}
        unknown = set(fields) - set(MEMBER_FIELDS)
        if not isinstance(by, str) or not isinstance(uuid, str) or unknown or not all(
                v is None or (isinstance(v, str) and len(v) <= MAX_ID)
                for v in fields.values()):
            self.counters["refused"] += 1
            return {"ok": False, "error": "by and uuid must be strings, fields among "
                                          f"{', '.join(MEMBER_FIELDS)} strings or null"}
        try:
            self.groups.update_instance(uuid, **fields)
        except ValueError as exc:
            self.counters["refused"] += 1
            return {"ok": False, "error": str(exc)}
        if "heartbeat" in fields:
            self._state_touched[uuid] = time.monotonic()
        self.counters["peer_changes"] += 1
        return {"ok": True, "applied": True}

    async def _notify(self, about: str, targets: Targets, data: dict[str, Any]) -> None:
        msg = sgwire.notification(data)
        self.counters["notifications"] += 1
        await self._send(targets, [msg])
        self._tell("notification", about, targets, msg)

    # --- REST -----------------------------------------------------------------------------
    def set_limits(self, max_groups: int, max_members: int, max_name_length: int) -> None:
        self.max_groups, self.max_members = max_groups, max_members
        self.max_name_length = min(max_name_length, MAX_ID)

    async def put_group(self, group_id: str, name: Any, members: Any) -> dict[str, Any]:
        """Creates or replaces a group (ValueError if invalid, GroupLimit if
        one too many); persisted first."""
        name, mem = _validate(group_id, name, members)
        longest = max([len(group_id), len(name), *map(len, mem)])
        if longest > self.max_name_length:
            raise ValueError(f"group id, name and members must be at most "
                             f"{self.max_name_length} characters")
        if len(mem) > self.max_members:
            raise ValueError(f"a group has at most {self.max_members} members")
        if self.groups.origin(group_id) == "nova":
            raise PermissionError("group comes from Nova; change it there")
        if self.groups.group(group_id) is None \
                and len(self.groups.all_groups()) >= self.max_groups:
            raise GroupLimit(f"{self.max_groups} server groups exist, the most "
                             "[servergroup] max_groups allows")
        assert self._db is not None
        async with self._groups_lock:
            await self._db(self.store.put_server_group, group_id, name, list(mem), "api")
            group = self.groups.set_group(group_id, name, mem, origin="api")
        await self._tell_controllers("sg_groups_changed")
        return self.groups.to_dict(group)

    async def delete_group(self, group_id: str) -> bool:
        if self.groups.origin(group_id) == "nova":
            raise PermissionError("group comes from Nova; change it there")
        assert self._db is not None
        async with self._groups_lock:
            stored = await self._db(self.store.delete_server_group, group_id)
            found = self.groups.remove_group(group_id) or stored
        await self._tell_controllers("sg_groups_changed")
        return found

    def list_groups(self) -> list[dict[str, Any]]:
        return [dict(self.groups.to_dict(g), origin=self.groups.origin(g.id))
                for g in self.groups.all_groups()]

    def get_group(self, group_id: str) -> Optional[dict[str, Any]]:
        g = self.groups.group(group_id)
        return None if g is None else dict(self.groups.to_dict(g),
                                           origin=self.groups.origin(group_id))

    # --- sending ----------------------------------------------------------------------
    async def _send(self, targets: Targets, messages: list[dict[str, Any]]) -> None:
        if self.bus is None or not targets:
            return
        self._hosts.update(targets)
        if self.fanout_min_hosts and len(targets) >= self.fanout_min_hosts \
                and 2 * len(targets) >= len(self._hosts):
            self.counters["deliveries"] += sum(len(v) for v in targets.values())
            try:
                await self.bus.fanout_compute("sg_deliver_hosts", targets=targets,
                                              messages=messages)
            except Exception:
                LOG.exception("server-group fanout delivery failed")
            return
        for host, instances in targets.items():
            self.counters["deliveries"] += len(instances)
            try:
                await self.bus.cast_compute(host, "sg_deliver", instances=instances,
                                            messages=messages)
            except Exception:  # best effort, like StarlingX; other hosts still get theirs
                LOG.exception("server-group delivery to %s failed", host)

    def _tell(self, kind: str, source: str, targets: Targets, msg: dict[str, Any]) -> None:
        now = time.monotonic()
        for cb in list(self.listeners):
            try:
                cb(kind, source, targets, msg, now)
            except Exception:
                LOG.exception("server-group listener failed")


def _with_refused(answer: dict[str, Any], refused: int) -> dict[str, Any]:
    if refused:  # the bad items, refused alone (the controller counts them)
        answer["refused"] = refused
    return answer


def _bad_host(host: Any) -> bool:
    return not isinstance(host, str) or not host.strip() or len(host) > 255 \
        or not is_text(host)


def _check_source(host: Any, source_instance: Any) -> Optional[str]:
    if _bad_host(host):
        return "host must be a non-empty string of at most 255"
    if not isinstance(source_instance, str) or not source_instance.strip() or \
            len(source_instance) > MAX_ID:
        return f"source_instance must be a non-empty string of at most {MAX_ID}"
    return None


def _validate(group_id: Any, name: Any, members: Any) -> tuple[str, tuple[str, ...]]:
    from nfvha.controller.servergroups import validate_group

    if not isinstance(group_id, str) or not group_id.strip() or len(group_id) > 255:
        raise ValueError("group id must be a non-empty string of at most 255 characters")
    return validate_group(name, members)


def _utc_now() -> str:
    from nfvha.controller.timeutil import iso, utcnow

    return iso(utcnow()) or ""
