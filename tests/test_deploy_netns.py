"""Namespace helpers: LAN set-up/tear-down, in-namespace sockets, rtnetlink watch."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from nfvha.verify.deploy import netns
from tests.conftest import require_command, require_root


@pytest.fixture
def lan():
    require_root("network namespaces")
    require_command("ip")
    with netns.Lan(net=201) as lan:
        yield lan
    for ns in (*lan.nodes.values(), lan.client):
        assert not netns.exists(ns.name)


def test_lan_names_are_unique_per_run_and_fit_interface_limits():
    a, b = netns.Lan(), netns.Lan()
    assert a.rid != b.rid
    for lan in (a, b):
        assert all(len(n) <= 15 for n in (*lan.ifname.values(), lan.bridge))
        assert lan.nodes["a"].name.startswith(f"nfvha-{lan.rid}")


def test_client_namespace_reaches_both_nodes_through_the_bridge(lan):
    servers = {}
    for key, ns in lan.nodes.items():
        srv = ns.socket()
        srv.bind((lan.addr[key], 0))
        srv.listen()
        servers[key] = srv
    try:
        for key, srv in servers.items():
            c = lan.client.socket()
            c.settimeout(2)
            c.connect(srv.getsockname())
            conn, _ = srv.accept()
            c.sendall(b"hi " + key.encode())
            assert conn.recv(10) == b"hi " + key.encode()
            conn.close()
            c.close()
        # and our own namespace does not have those addresses at all
        with socket.socket() as s:
            s.settimeout(0.3)
            with pytest.raises(OSError):
                s.connect(servers["a"].getsockname())
    finally:
        for s in servers.values():
            s.close()


def test_address_watch_stamps_add_and_remove(lan):
    addr = "10.213.201.100"
    w = netns.AddressWatch(addr, {k: ns.name for k, ns in lan.nodes.items()}).start()
    try:
        assert w.current() == set()
        t = time.monotonic()
        lan.nodes["b"].run(["ip", "addr", "add", f"{addr}/24", "dev", lan.ifname["b"]])
        assert w.wait_for(lambda h: h == {"b"}, 2)
        assert addr in netns.dump_addresses(lan.nodes["b"].name)
        lan.nodes["b"].run(["ip", "addr", "del", f"{addr}/24", "dev", lan.ifname["b"]])
        assert w.wait_for(lambda h: h == set(), 2)
        kinds = [(k, kind) for _m, _w, k, kind in w.events]
        assert kinds == [("b", "add"), ("b", "del")]
        assert all(m >= t for m, *_ in w.events)
    finally:
        w.stop()


def test_delete_kills_processes_left_inside(lan):
    p = lan.nodes["a"].popen(["sleep", "60"])
    deadline = time.monotonic() + 10
    while p.pid not in netns.pids_in(lan.nodes["a"].name):
        assert time.monotonic() < deadline, "the process never entered the namespace"
        time.sleep(0.01)
    lan.nodes["a"].delete()
    assert p.wait(5) is not None
    assert not netns.exists(lan.nodes["a"].name)


def test_netlink_parser_survives_garbage_and_truncation():
    good = _newaddr(7, "10.1.2.3")
    assert netns._parse_addr_msgs(good) == [(netns.RTM_NEWADDR, 7, "10.1.2.3")]
    for bad in (b"", b"\x00" * 3, good[:20], good[:-3], os.urandom(200),
                struct.pack("=IHHII", 0, 20, 0, 0, 0) + b"x" * 40):
        netns._parse_addr_msgs(bad)   # never raises, never loops forever


def _newaddr(index: int, addr: str) -> bytes:
    attr = struct.pack("=HH", 8, netns.IFA_LOCAL) + socket.inet_aton(addr)
    body = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, index) + attr
    return struct.pack("=IHHII", 16 + len(body), netns.RTM_NEWADDR, 0, 0, 0) + body


def test_ns_socket_does_not_move_the_calling_thread(lan):
    before = os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")
    s = netns.ns_socket(lan.client.name)
    s.close()
    assert os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net") == before


# ------------------------------------------------ keepalived without a cluster
@pytest.mark.parametrize("track", ["process", "script"])
def test_vrrp_pair_without_cluster_fails_over_but_nobody_recovers(tmp_path, track):
    require_root("network namespaces")
    require_command("keepalived", "ip", "curl")
    from nfvha.verify.deploy.keepalived import VrrpPair

    with VrrpPair(tmp_path, cluster=None, net=202, track=track) as pair:
        master = pair.wait_stable(15)
        backup = pair.other(master)
        assert pair.fetch() == f"ok node-{master}"
        t = pair.kill_service(master)
        took = pair.wait_event(backup, "vip", "add", t, 5)
        print(f"\nvrrp ({track} tracking, no cluster): VIP on backup "
              f"{(took.mono - t) * 1000:.0f} ms")
        assert pair.fetch() == f"ok node-{backup}"
        limit = 0.5 if track == "process" else 2.5   # script: 1 s interval + adverts
        assert took.mono - t < limit
        time.sleep(1.0)
        # no cluster manager: the failed node stays FAULT, its service dead
        assert pair.states()[master] == "FAULT"
        assert pair.service_pid(master) is None
