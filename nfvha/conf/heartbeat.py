from __future__ import annotations

from oslo_config import cfg

GROUP = "heartbeat"
OPTS = [
    cfg.StrOpt("instances_dir", default="/var/lib/libvirt/qemu",
               help="Directory holding the QEMU chardev sockets of the instances."),
    cfg.StrOpt("socket_pattern",
               default=r"cgcs\.heartbeat\.(?P<uuid>[0-9a-fA-F-]{36})\.sock$",
               help="Regular expression for heartbeat sockets; group 'uuid' names the instance."),
    cfg.IntOpt("min_interval_ms", default=100, min=10,
               help="A guest asking for a shorter interval is heartbeated at this one "
                    "(StarlingX uses 400)."),
    cfg.IntOpt("max_interval_ms", default=60000, min=100,
               help="A guest asking for a longer interval is heartbeated at this one."),
    cfg.IntOpt("failure_threshold", default=1, min=1,
               help="Challenges in a row unanswered within their response deadline that "
                    "declare heartbeat loss. 1: a hang is declared within one interval "
                    "plus the response deadline."),
    cfg.IntOpt("min_response_ms", default=20, min=1,
               help="Floor of each challenge's response deadline, which otherwise "
                    "follows the channel's measured round trip (smoothed round trip + "
                    "4 x its deviation) and never exceeds the interval. Set it to the "
                    "interval or more for the old rule: a miss only when the next "
                    "challenge is due."),
    cfg.IntOpt("max_extension_ms", default=500, min=0,
               help="How long in all a challenge's response deadline may be extended "
                    "while the guest's QEMU process waits for a CPU (a thread runnable, "
                    "or waiting in schedstat; a guest busy on its own CPU counts too, "
                    "so a hung guest spinning is declared this much later) or the "
                    "compute agent itself runs late, before a miss is declared or, for "
                    "a guest starved by its own evidence, the host condition 'starved' "
                    "(no VM fault) is reported. 0: no extension."),
    cfg.StrOpt("spool_dir", default="/var/lib/nfvha/fault-spool",
               help="Where the compute agent keeps each fault until the controller has "
                    "acknowledged it, so a restarted agent resends what it had not "
                    "delivered. Empty: memory only."),
    cfg.IntOpt("rate_limit_per_s", default=50, min=1,
               help="Messages per second a guest may send before input is dropped."),
    cfg.BoolOpt("steady_path", default=True,
                help="Compute agent: run a healthy guest's challenge/answer cycle on the "
                     "C steady path (about a third of the CPU; anything else goes to the "
                     "Python host machine as before). Off, or not built (no C compiler "
                     "at install): every cycle on the Python machine."),
    cfg.FloatOpt("read_batch_ms", default=1.0, min=0.0, max=5.0,
                 help="Compute agent: when a guest socket has input, wait this long and "
                      "read every socket that has input by then in one pass (at 1000 "
                      "guests at 100 ms about a fifth less of the agent's CPU); a round "
                      "trip takes up to this much longer, far inside the response "
                      "deadline (min_response_ms). 0: read each socket as soon as it "
                      "has input."),
    cfg.FloatOpt("sync_interval_s", default=30.0, min=0.0,
                 help="How often the compute agent sends the controller a digest of its "
                      "instances' heartbeat states; on a mismatch (a state cast lost while "
                      "RabbitMQ restarted, an instance gone) the controller asks for the "
                      "full list. 0: never."),
    cfg.FloatOpt("agent_report_interval_s", default=2.0, min=0.0,
                 help="Compute agent: how often it tells every controller it is alive "
                      "(one small fanout cast). 0: never (the controllers then see the host "
                      "as silent unless their agent_down_after_s is 0 too)."),
    cfg.FloatOpt("agent_down_after_s", default=10.0, min=0.0,
                 help="Controller: a compute agent not heard from for this long is logged, "
                      "exported (nfvha_compute_up 0) and shown as 'silent' in GET /v1/hosts "
                      "and on its instances: its guests are not being heartbeated. Keep it "
                      "above 3 x agent_report_interval_s. No VM fault is raised for it. "
                      "0: do not track."),
    cfg.IntOpt("planned_grace_ms", default=250, min=0, max=10000,
               help="Controller, with [nova] notifications: how long a fault "
                    "waits before it is checked against the Nova operations in progress "
                    "(Nova's notification of an operation travels apart from the fault "
                    "it causes). A fault an operation explains is stored with its "
                    "deliveries 'suppressed', not reported. Without Nova notifications "
                    "faults never wait."),
    cfg.FloatOpt("planned_linger_s", default=5.0, min=0.0,
                 help="How long after a Nova operation ended it still explains a fault "
                      "(the source of a live migration closes its channel around then)."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
