"""Server-group membership and routing (in memory; the store persists it later).

Rules that bind this module:

- A group member is named by instance uuid or instance name (Nova gives
  uuids; a libvirt-only setup or the REST API may give names). An instance
  record (uuid, name, host, state, ...) comes from the compute agents and
  from Nova; a member matches a record by either identifier.
- A message reaches only other members of the groups its sender belongs
  to: never the sender itself, never a VM outside those groups; a VM in no
  group reaches nobody. A member without a known host is unreachable and
  skipped (best effort, as in StarlingX).
- Targets are named by instance name when known, else uuid: the compute
  agent addresses a guest's messaging socket by instance name
  (``cgcs.messaging.<instance-name>.sock``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Iterable, List, Optional, Tuple

from nfvha.controller.nova_notifications import InstanceChange, peer_notification

MAX_ID = 255
MAX_MEMBERS = 1000
# Target names held in remembered routes, all told (one route per instance
# that sent or was told about since the last change); past it they are all
# forgotten and computed again: a few MB at most.
MAX_ROUTED = 200_000

Targets = Dict[str, List[str]]  # compute host → target instances (name, else uuid)


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    members: Tuple[str, ...]


@dataclass(frozen=True)
class Instance:
    uuid: str
    name: Optional[str] = None
    host: Optional[str] = None
    state: Optional[str] = None
    task_state: Optional[str] = None
    power_state: Optional[str] = None
    heartbeat: Optional[str] = None  # nfvha heartbeat state: enabled / failed / ...
    display_name: Optional[str] = None

    @property
    def target(self) -> str:
        return self.name or self.uuid


_FIELDS = ("name", "host", "state", "task_state", "power_state", "heartbeat", "display_name")


def is_text(value: Any) -> bool:
    """Whether a str is text that can be stored and shown: a lone surrogate
    (a valid JSON escape, "\\udcff") is not, and would fail every encoder;
    nor is a NUL, which PostgreSQL cannot store."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID \
            or not is_text(value):
        raise ValueError(f"{what} must be a non-empty string of at most {MAX_ID} characters")
    return value


def validate_group(name: Any, members: Any) -> Tuple[str, Tuple[str, ...]]:
    """Checks a group definition (config or ``PUT /v1/server-groups/{id}``)."""
    if not isinstance(name, str) or len(name) > MAX_ID or not is_text(name):
        raise ValueError(f"name must be a string of at most {MAX_ID} characters")
    if not isinstance(members, (list, tuple)) or len(members) > MAX_MEMBERS:
        raise ValueError(f"members must be a list of at most {MAX_MEMBERS} instances")
    seen: List[str] = []
    for m in members:
        _check_id(m, "member")
        if m not in seen:
            seen.append(m)
    return name, tuple(seen)


class ServerGroups:
    def __init__(self) -> None:
        self._groups: Dict[str, Group] = {}
        self._instances: Dict[str, Instance] = {}  # by uuid
        self._by_name: Dict[str, str] = {}  # instance name → uuid
        self._origin: Dict[str, str] = {}  # group id → "nova" | "config" | "api"
        # Targets by sender, computed once and forgotten at any change of a
        # group or an instance: a broadcast otherwise walks every group and
        # member (bench/servergroup_latency.py sends 14 a second).
        self._routes: Dict[str, Targets] = {}
        self._routed = 0  # target names in them, plus one a route

    # --- membership ---------------------------------------------------------

    def set_group(
        self, group_id: str, name: str, members: Iterable[str], origin: str = "api"
    ) -> Group:
        _check_id(group_id, "group id")
        if isinstance(members, (str, bytes)):  # list("abc") would be three members
            raise ValueError("members must be a list of instances, not a string")
        name, mem = validate_group(name, list(members))
        group = Group(group_id, name, mem)
        self._groups[group_id] = group
        self._origin[group_id] = origin
        self._forget_routes()
        return group

    def remove_group(self, group_id: str) -> bool:
        self._origin.pop(group_id, None)
        self._forget_routes()
        return self._groups.pop(group_id, None) is not None

    def origin(self, group_id: str) -> Optional[str]:
        return self._origin.get(group_id)

    def group(self, group_id: str) -> Optional[Group]:
        return self._groups.get(group_id)

    def all_groups(self) -> List[Group]:
        return list(self._groups.values())

    def update_instance(self, uuid: str, **fields: Optional[str]) -> bool:
        """Creates or updates an instance record; fields: name, host, state,
        task_state, power_state, heartbeat, display_name (None = unchanged).
        Returns True if anything changed."""
        _check_id(uuid, "instance uuid")
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown instance fields {sorted(unknown)}")
        for k, v in fields.items():  # shown in status answers and the REST API
            if v is not None and (not isinstance(v, str) or not is_text(v)):
                raise ValueError(f"instance {k} must be text")
        existed = uuid in self._instances
        old = self._instances.get(uuid, Instance(uuid))
        new = replace(old, **{k: v for k, v in fields.items() if v is not None})
        if new.name != old.name:
            if old.name and self._by_name.get(old.name) == uuid:
                del self._by_name[old.name]
            if new.name:
                self._by_name[new.name] = uuid
        self._instances[uuid] = new
        changed = new != old or not existed
        if changed:
            self._forget_routes()
        return changed

    def remove_instance(self, uuid: str) -> None:
        self._forget_routes()
        inst = self._instances.pop(uuid, None)
        if inst and inst.name and self._by_name.get(inst.name) == uuid:
            del self._by_name[inst.name]

    def instance(self, key: str) -> Optional[Instance]:
        """Record by uuid or instance name."""
        if key in self._instances:
            return self._instances[key]
        uuid = self._by_name.get(key)
        return self._instances.get(uuid) if uuid else None

    # --- queries --------------------------------------------------------------

    def _keys(self, instance: str) -> Tuple[str, ...]:
        rec = self.instance(instance)
        if rec is None:
            return (instance,)
        return tuple(k for k in (rec.uuid, rec.name, instance) if k)

    def groups_of(self, instance: str) -> List[Group]:
        keys = set(self._keys(instance))
        return [g for g in self._groups.values() if keys.intersection(g.members)]

    def _peers(self, instance: str) -> List[Instance]:
        keys = set(self._keys(instance))
        seen, out = set(), []
        for g in self.groups_of(instance):
            for m in g.members:
                if m in keys:
                    continue
                rec = self.instance(m)
                if rec is None or rec.uuid in seen or keys.intersection((rec.uuid, rec.name)):
                    continue
                seen.add(rec.uuid)
                out.append(rec)
        return out

    def _targets(self, instance: str) -> Targets:
        route = self._routes.get(instance)
        if route is None:
            route = {}
            for rec in self._peers(instance):
                if rec.host and rec.state != "deleted":
                    route.setdefault(rec.host, []).append(rec.target)
            size = 1 + sum(len(names) for names in route.values())
            if self._routed + size > MAX_ROUTED:
                self._forget_routes()
            self._routes[instance] = route
            self._routed += size
        # a copy: the caller may change it, the next broadcast must not see that
        return {host: list(names) for host, names in route.items()}

    def _forget_routes(self) -> None:
        self._routes.clear()
        self._routed = 0

    def route_broadcast(self, source_instance: str, data: str) -> Targets:
        """Compute hosts and instances a broadcast from ``source_instance`` goes to."""
        if not isinstance(data, str):
            raise ValueError("broadcast data must be a string")
        return self._targets(source_instance)

    def notification_targets(self, instance_uuid: str, notification: Dict[str, Any]) -> Targets:
        """Where a notification about ``instance_uuid`` goes: its group peers."""
        if not isinstance(notification, dict):
            raise ValueError("notification must be an object")
        return self._targets(instance_uuid)

    def status(self, instance: str) -> List[Dict[str, Any]]:
        """State of every member of the instance's groups, itself included (first)."""
        me = self.instance(instance)
        recs = [me] if me else []
        recs += self._peers(instance)
        out = [member_state(r) for r in recs]
        if me is None:
            out.insert(0, {"instance_id": None, "instance_name": instance, "host": None,
                           "state": None, "task_state": None, "power_state": None,
                           "heartbeat": None})
        # group members never seen by a compute agent or Nova are reported too
        known = {k for r in recs for k in (r.uuid, r.name) if k} | {instance}
        for g in self.groups_of(instance):
            for m in g.members:
                if m not in known and self.instance(m) is None:
                    known.add(m)
                    out.append({"instance_id": None, "instance_name": m, "host": None,
                                "state": "unknown", "task_state": None, "power_state": None,
                                "heartbeat": None})
        return out

    def to_dict(self, group: Group) -> Dict[str, Any]:
        """A group as the REST API shows it."""
        members = []
        for m in group.members:
            rec = self.instance(m)
            members.append(dict(member_state(rec), member=m) if rec else
                           {"member": m, "instance_id": None, "instance_name": None,
                            "host": None, "state": "unknown"})
        return {"id": group.id, "name": group.name, "members": members}

    # --- state changes that peers are told about ----------------------------------

    def on_nova_change(self, change: InstanceChange) -> Tuple[Targets, Dict[str, Any]]:
        """Applies a Nova notification; returns (targets, notification data)."""
        self.update_instance(
            change.uuid, host=change.host, state=change.state, task_state=change.task_state,
            power_state=change.power_state, display_name=change.display_name,
        )
        data = peer_notification(change)
        return self.notification_targets(change.uuid, data), data

    def on_heartbeat(
        self, uuid: str, heartbeat: str, at: str, health: Optional[str] = None
    ) -> Tuple[Targets, Optional[Dict[str, Any]]]:
        """nfvha heartbeat state of an instance; returns (targets, notification
        data) when it changed, ({}, None) when not."""
        rec = self.instance(uuid)
        if rec is not None and rec.heartbeat == heartbeat:
            return {}, None
        self.update_instance(uuid, heartbeat=heartbeat)
        rec = self._instances[uuid]
        payload = {"instance_id": rec.uuid, "host": rec.host, "state": rec.state,
                   "heartbeat": heartbeat}
        if health is not None:
            payload["health"] = health
        data = {"payload": {k: v for k, v in payload.items() if v is not None},
                "event_type": "nfvha.instance.heartbeat", "priority": "INFO",
                "timestamp": at}
        return self.notification_targets(uuid, data), data


def member_state(rec: Instance) -> Dict[str, Any]:
    """One server's state, as sent in a status_response."""
    d = asdict(rec)
    return {
        "instance_id": d["uuid"], "instance_name": d["name"], "host": d["host"],
        "state": d["state"], "task_state": d["task_state"], "power_state": d["power_state"],
        "heartbeat": d["heartbeat"],
    }


# --- loaders ---------------------------------------------------------------------


def load_config(groups: ServerGroups, data: Any) -> int:
    """Groups from configuration: a list of ``{"id", "name", "members"}`` or a
    mapping ``{id: {"name", "members"}}``. Returns the number of groups set."""
    if isinstance(data, dict):
        items = [dict(v, id=k) if isinstance(v, dict) else {"id": k} for k, v in data.items()]
    elif isinstance(data, list):
        items = data
    else:
        raise ValueError("server groups config must be a list or a mapping")
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("each server group must be a mapping")
        groups.set_group(item.get("id"), item.get("name", ""), item.get("members", []),
                         origin="config")
    return len(items)


def _power_state(value: Any) -> Optional[str]:
    # Nova's API reports the integer code; keep the versioned notifications' names.
    names = {0: "pending", 1: "running", 3: "paused", 4: "shutdown", 6: "crashed",
             7: "suspended"}
    if value is None:
        return None
    return names.get(value, str(value)) if isinstance(value, int) else str(value)


def load_from_nova(conn: Any, groups: ServerGroups, sync: bool = True) -> int:
    """Groups and member placement from Nova through openstacksdk ``conn``
    (``conn.compute.server_groups()`` and ``conn.compute.servers()``).
    With ``sync``, groups loaded from Nova earlier that Nova no longer has are
    removed. Returns the number of groups Nova has."""
    found = list(conn.compute.server_groups(all_projects=True))
    wanted = {m for g in found for m in (g.member_ids or [])}
    for server in conn.compute.servers(details=True, all_projects=True):
        if server.id in wanted:
            groups.update_instance(
                server.id, name=server.instance_name, host=server.compute_host,
                state=server.vm_state, task_state=server.task_state,
                power_state=_power_state(server.power_state), display_name=server.name,
            )
    for g in found:
        groups.set_group(g.id, g.name or "", list(g.member_ids or []), origin="nova")
    if sync:  # only groups that came from Nova; config/API groups stay
        ids = {g.id for g in found}
        for g in groups.all_groups():
            if g.id not in ids and groups.origin(g.id) == "nova":
                groups.remove_group(g.id)
    return len(found)
