"""Server-group membership model: who a broadcast / notification reaches, status."""
from __future__ import annotations

import pytest
from openstack.compute.v2.server import Server
from openstack.compute.v2.server_group import ServerGroup

from nfvha.controller import nova_notifications as nn
from nfvha.controller import servergroups
from nfvha.controller.servergroups import ServerGroups, load_config, load_from_nova


def _setup() -> ServerGroups:
    sg = ServerGroups()
    # a, b, c in group g1 (a by uuid, b by name); c and d in g2; e in no group
    for uuid, name, host in [("ua", "instance-a", "A"), ("ub", "instance-b", "A"),
                             ("uc", "instance-c", "B"), ("ud", "instance-d", "B"),
                             ("ue", "instance-e", "B")]:
        sg.update_instance(uuid, name=name, host=host, state="active")
    sg.set_group("g1", "pair", ["ua", "instance-b", "uc"])
    sg.set_group("g2", "other", ["instance-c", "ud"])
    return sg


def test_broadcast_reaches_other_members_of_the_senders_groups_only():
    sg = _setup()
    assert sg.route_broadcast("instance-a", "x") == {"A": ["instance-b"], "B": ["instance-c"]}
    assert sg.route_broadcast("ua", "x") == {"A": ["instance-b"], "B": ["instance-c"]}


def test_member_of_two_groups_reaches_both_without_itself():
    sg = _setup()
    assert sg.route_broadcast("instance-c", "x") == {
        "A": ["instance-a", "instance-b"], "B": ["instance-d"]}


def test_non_member_reaches_nobody_and_is_reached_by_nobody():
    sg = _setup()
    assert sg.route_broadcast("instance-e", "x") == {}
    assert sg.route_broadcast("instance-unknown", "x") == {}
    for src in ("instance-a", "instance-b", "instance-c", "instance-d"):
        targets = sg.route_broadcast(src, "x")
        assert all("instance-e" not in v for v in targets.values())
        assert all(src not in v for v in targets.values())


def test_duplicate_membership_gives_one_copy():
    sg = _setup()
    sg.set_group("g3", "dup", ["ua", "instance-b", "ub"])
    t = sg.route_broadcast("instance-a", "x")
    assert t["A"].count("instance-b") == 1


def test_member_without_host_or_deleted_is_skipped():
    sg = _setup()
    sg.set_group("g4", "lonely", ["ua", "never-seen"])
    assert sg.route_broadcast("never-seen", "x") == {"A": ["instance-a"]}
    sg.update_instance("ub", state="deleted")
    assert sg.route_broadcast("instance-a", "x") == {"B": ["instance-c"]}


def test_rename_keeps_name_index_consistent():
    sg = _setup()
    sg.update_instance("ub", name="instance-b2")
    assert sg.instance("instance-b") is None
    assert sg.instance("instance-b2").uuid == "ub"
    # group g1 named b by its old name: that member no longer resolves
    assert sg.route_broadcast("instance-a", "x") == {"B": ["instance-c"]}


def test_routes_follow_every_change_made_after_a_broadcast():
    # routes are remembered between broadcasts: none may outlive a change
    sg = _setup()
    assert sg.route_broadcast("instance-a", "x") == {"A": ["instance-b"], "B": ["instance-c"]}
    sg.update_instance("ub", host="C")  # moved
    assert sg.route_broadcast("instance-a", "x") == {"C": ["instance-b"], "B": ["instance-c"]}
    sg.update_instance("ub", name="instance-b2")  # renamed: g1 names the old name
    assert sg.route_broadcast("instance-a", "x") == {"B": ["instance-c"]}
    sg.set_group("g1", "pair", ["ua", "ub", "ud"])  # group replaced
    assert sg.route_broadcast("instance-a", "x") == {"C": ["instance-b2"], "B": ["instance-d"]}
    sg.update_instance("ud", state="deleted")
    assert sg.route_broadcast("instance-a", "x") == {"C": ["instance-b2"]}
    sg.remove_instance("ub")
    assert sg.route_broadcast("instance-a", "x") == {}
    sg.set_group("g5", "new", ["instance-a", "instance-e"])  # a group added
    assert sg.route_broadcast("instance-a", "x") == {"B": ["instance-e"]}
    assert sg.notification_targets("ue", {}) == {"A": ["instance-a"]}
    sg.remove_group("g5")
    assert sg.route_broadcast("instance-a", "x") == {}
    assert sg.notification_targets("ue", {}) == {}


def test_a_route_the_caller_changes_leaves_the_next_one_whole():
    sg = _setup()
    first = sg.route_broadcast("instance-a", "x")
    first["A"].append("instance-e")
    first.pop("B")
    assert sg.route_broadcast("instance-a", "x") == {"A": ["instance-b"], "B": ["instance-c"]}


def test_remembered_routes_stay_within_their_bound_and_right(monkeypatch):
    monkeypatch.setattr(servergroups, "MAX_ROUTED", 6)
    sg = _setup()
    expected = {"instance-a": {"A": ["instance-b"], "B": ["instance-c"]},
                "instance-b": {"A": ["instance-a"], "B": ["instance-c"]},
                "instance-c": {"A": ["instance-a", "instance-b"], "B": ["instance-d"]},
                "instance-d": {"B": ["instance-c"]}, "instance-e": {}}
    for _ in range(3):
        for src, targets in expected.items():
            assert sg.route_broadcast(src, "x") == targets
            assert 0 < sg._routed <= 6


def test_notification_targets_are_peers_of_the_changed_instance():
    sg = _setup()
    assert sg.notification_targets("ud", {"payload": {}}) == {"B": ["instance-c"]}
    assert sg.notification_targets("ue", {"payload": {}}) == {}


def test_status_includes_itself_first_and_unknown_members():
    sg = _setup()
    sg.update_instance("ua", heartbeat="enabled")
    st = sg.status("instance-a")
    assert [m["instance_name"] for m in st] == ["instance-a", "instance-b", "instance-c"]
    assert st[0]["heartbeat"] == "enabled" and st[0]["host"] == "A"
    sg.set_group("g1", "pair", ["ua", "ub", "ghost"])
    assert [m["instance_name"] for m in sg.status("ua")] == ["instance-a", "instance-b", "ghost"]
    assert sg.status("ua")[2]["state"] == "unknown"
    assert [m["instance_name"] for m in sg.status("instance-e")] == ["instance-e"]


def test_nova_change_updates_model_and_targets_peers():
    sg = _setup()
    ch = nn.parse({"event_type": "compute.instance.update", "priority": "INFO",
                   "timestamp": "t", "payload": {"instance_id": "ub", "state": "error",
                                                 "old_state": "active", "host": "B"}})
    targets, data = sg.on_nova_change(ch)
    assert targets == {"A": ["instance-a"], "B": ["instance-c"]}
    assert data["payload"]["state"] == "error"
    assert sg.instance("ub").host == "B" and sg.instance("ub").state == "error"


def test_heartbeat_change_notifies_once_per_transition():
    sg = _setup()
    t, d = sg.on_heartbeat("uc", "failed", "2026-11-24T03:00:00.000000Z")
    assert t == {"A": ["instance-a", "instance-b"], "B": ["instance-d"]}
    assert d["event_type"] == "nfvha.instance.heartbeat"
    assert d["payload"]["heartbeat"] == "failed"
    assert sg.on_heartbeat("uc", "failed", "later") == ({}, None)


@pytest.mark.parametrize("name,members", [
    (5, []), ("n", "ua"), ("n", [""]), ("n", [7]), ("n", ["x" * 256]), ("n", ["m"] * 1001),
])
def test_invalid_group_definitions_raise(name, members):
    with pytest.raises(ValueError):
        ServerGroups().set_group("g", name, members)


def test_invalid_ids_and_fields_raise():
    sg = ServerGroups()
    with pytest.raises(ValueError):
        sg.set_group("", "n", [])
    with pytest.raises(ValueError):
        sg.update_instance("u", colour="blue")
    with pytest.raises(ValueError):
        sg.route_broadcast("u", 5)


def test_load_config_list_and_mapping():
    sg = ServerGroups()
    assert load_config(sg, [{"id": "g1", "name": "a", "members": ["x", "y"]}]) == 1
    assert load_config(sg, {"g2": {"name": "b", "members": ["y", "z"]}}) == 1
    assert sg.group("g2").members == ("y", "z") and sg.origin("g2") == "config"
    with pytest.raises(ValueError):
        load_config(sg, "nope")


class _Compute:
    """The two openstacksdk compute-proxy calls the loader uses, returning real
    openstacksdk resources built from Nova API bodies (no Nova runs here)."""

    def __init__(self, groups, servers):
        self._groups, self._servers = groups, servers

    def server_groups(self, all_projects=False):
        assert all_projects
        return iter(self._groups)

    def servers(self, details=True, all_projects=False):
        assert details and all_projects
        return iter(self._servers)


class _Conn:
    def __init__(self, groups, servers):
        self.compute = _Compute(groups, servers)


def _server(uuid, name, inst, host, vm_state="active", power=1):
    return Server(**{"id": uuid, "name": name, "OS-EXT-SRV-ATTR:instance_name": inst,
                     "OS-EXT-SRV-ATTR:host": host, "OS-EXT-STS:vm_state": vm_state,
                     "OS-EXT-STS:task_state": None, "OS-EXT-STS:power_state": power})


def test_load_from_nova_through_openstacksdk_resources():
    sg = ServerGroups()
    sg.set_group("api-group", "mine", ["u9"])
    conn = _Conn(
        [ServerGroup(**{"id": "g1", "name": "pair", "members": ["u1", "u2"],
                        "policies": ["anti-affinity"]})],
        [_server("u1", "vm1", "instance-00000001", "cmp-1"),
         _server("u2", "vm2", "instance-00000002", "cmp-2", "stopped", 4),
         _server("u3", "vm3", "instance-00000003", "cmp-2")],
    )
    assert load_from_nova(conn, sg) == 1
    assert sg.route_broadcast("instance-00000001", "hi") == {"cmp-2": ["instance-00000002"]}
    assert sg.instance("u2").power_state == "shutdown" and sg.instance("u2").state == "stopped"
    assert sg.instance("u3") is None  # not in any group: not tracked
    conn.compute._groups = []
    load_from_nova(conn, sg)
    assert sg.group("g1") is None and sg.group("api-group") is not None
