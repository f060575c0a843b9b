"""HAProxy config for the scenarios and the `show stat` parser (no haproxy needed)."""
from __future__ import annotations

from nfvha.verify.haproxy import STATE_RE, HaproxyConfig, StatsWatcher, parse_show_stat

HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
          "wretr,wredis,status,weight\n")
SHOW_STAT = HEADER + """fe,FRONTEND,,,1,2,2000,40,0,0,0,0,0,,,,,OPEN,
be,s1,0,0,0,1,,13,0,0,,0,,0,0,0,0,UP,1
be,s2,0,0,0,1,,14,0,0,,0,,3,0,1,2,UP 1/2,1
be,s3,0,0,0,1,,13,0,0,,0,,0,0,0,0,DOWN 1/2,1
be,BACKEND,0,0,0,1,200,40,0,0,0,0,,3,0,1,2,UP,3
"""


def test_config_with_health_checks_redispatch_and_retries():
    cfg = HaproxyConfig(8000, [("s1", 8001), ("s2", 8002)]).render("/tmp/x.sock")
    assert "server s1 127.0.0.1:8001 check inter 100 fall 2 rise 2" in cfg
    assert "option httpchk GET /" in cfg and "option redispatch 1" in cfg
    assert "retries 3" in cfg and "bind 127.0.0.1:8000" in cfg
    assert "stats socket /tmp/x.sock" in cfg and "log stdout" in cfg


def test_config_without_health_checks_has_no_check_at_all():
    cfg = HaproxyConfig(8000, [("s1", 8001)], checks=False).render("/tmp/x.sock")
    assert "check" not in cfg.replace("timeout check", "")
    assert "server s1 127.0.0.1:8001\n" in cfg


def test_config_of_the_tc053_load_balancers_on_node_addresses():
    cfg = HaproxyConfig(8080, [("api-a", 9000), ("api-b", 9000)], bind="0.0.0.0",
                        backend="api", server_host=(("api-a", "10.2.0.1"), ("api-b", "10.2.0.2")),
                        served_via="lb node-a").render()
    assert "stats socket" not in cfg and "bind 0.0.0.0:8080" in cfg
    assert "default_backend api\n" in cfg and "backend api\n" in cfg
    assert "server api-b 10.2.0.2:9000 check inter 100 fall 2 rise 2" in cfg
    assert 'X-Served-By "%[res.hdr(X-Served-By)] via lb node-a"\n    server api-a' in cfg


def test_show_stat_parsing_and_effective_state():
    st = parse_show_stat(SHOW_STAT)
    assert set(st) == {"s1", "s2", "s3"}
    assert st["s2"].status == "UP 1/2" and st["s2"].state == "UP"      # going down, still in
    assert st["s3"].state == "DOWN"                                    # coming back, still out
    assert (st["s2"].econ, st["s2"].wretr, st["s2"].wredis, st["s2"].stot) == (3, 1, 2, 14)


def test_last_increase_looks_only_inside_the_window():
    w = StatsWatcher.__new__(StatsWatcher)
    base = parse_show_stat(SHOW_STAT)
    w.history = []
    for t, stot in [(1.0, 14), (2.0, 15), (3.0, 15), (4.0, 16), (5.0, 20)]:
        s = dict(base)
        s["s2"] = base["s2"].__class__("s2", "UP", 3, 1, 2, stot)
        w.history.append((t, s))
    assert w.last_increase("s2", "stot", after=1.5) == 5.0
    assert w.last_increase("s2", "stot", after=1.5, before=4.5) == 4.0
    assert w.last_increase("s2", "stot", after=4.5, before=4.9) is None


def test_alarm_line_pattern_matches_haproxy_26_log_lines():
    line = ("Server be/s2 is DOWN, reason: Layer4 connection problem, info: \"Connection "
            "refused\", check duration: 0ms. 2 active and 0 backup servers left.")
    m = STATE_RE.search("[WARNING]  (1234) : " + line)
    assert m and m.groups() == ("be", "s2", "DOWN")
    assert STATE_RE.search("Server be/s2 is UP, reason: Layer7 check passed").group(3) == "UP"
    assert STATE_RE.search("Connect from 127.0.0.1:1 to 127.0.0.1:2 (fe/HTTP)") is None
