"""[compute]: where the compute agent learns its instances, and libvirt."""
from __future__ import annotations

from oslo_config import cfg

GROUP = "compute"
OPTS = [
    cfg.StrOpt("instances_source", default="directory", choices=["directory", "libvirt"],
               help="How the compute agent finds its guests' channels. 'directory': QEMU "
                    "chardev sockets named by [heartbeat] socket_pattern (and [servergroup] "
                    "socket_pattern) in [heartbeat] instances_dir, polled; it cannot say why "
                    "a channel closed nor act on a VM. 'libvirt': the domains of the "
                    "libvirtd at libvirt_uri and their <channel>s, followed by lifecycle "
                    "events; a closed channel is explained (shut down, destroyed, migrated, "
                    "detached: no fault; the emulator died: vm_crashed) and recovery "
                    "actions (reset, destroy) are carried out."),
    cfg.StrOpt("libvirt_uri", default="qemu:///system",
               help="The libvirtd the 'libvirt' instance source and recovery talk to."),
    cfg.StrOpt("channels_dir", default="/var/lib/libvirt/qemu",
               help="Where `nfvha attach` makes the UNIX sockets of the channels it "
                    "hot-plugs into a domain (cgcs.heartbeat.<uuid>.sock, "
                    "cgcs.messaging.<name>.sock): where Nova/StarlingX put them, so the "
                    "'directory' source finds them too. libvirt creates the socket and "
                    "hands it to QEMU."),
    cfg.StrOpt("nova_cloud", default="",
               help="With the 'libvirt' source: the clouds.yaml entry of nfvha's service "
                    "user ('envvars': the OS_* environment) through which the compute agent "
                    "asks Nova which channels a starting instance's flavor wants "
                    "(hw:nfvha_heartbeat=true, hw:nfvha_messaging=true; StarlingX's "
                    "sw:wrs:guest:heartbeat=true, sw:wrs:srv_grp_messaging=true) or its "
                    "image (hw_nfvha_heartbeat=true), and hot-plugs them into the domain "
                    "(sockets in channels_dir). Empty: nothing is plugged automatically "
                    "(`nfvha attach` does it by hand)."),
    cfg.FloatOpt("loss_wait_s", default=3.0, min=0.0, max=60.0,
                 help="How long the 'libvirt' source waits for libvirt to say why an "
                      "enabled guest's heartbeat channel closed (the domain's lifecycle "
                      "event) before the loss stands as channel_lost."),
    cfg.StrOpt("management_address", default="",
               help="This host's address on the management network, reported to the "
                    "controllers in every alive fanout: the address they probe to tell "
                    "a dead host from a dead agent ([hosts] probe_port). Empty: none "
                    "reported ([hosts] management_addresses may still name it)."),
    cfg.StrOpt("metrics_listen", default="",
               help="host:port (e.g. 0.0.0.0:8781; IPv6 [::]:8781) on which the compute "
                    "agent serves Prometheus metrics at GET /metrics: sessions, guests by "
                    "phase, round-trip and timer-lag quantiles, fault outbox, process CPU "
                    "and memory (nfvha_agent_*, process_*, with a host label), computed "
                    "at scrape time only. Empty: off. An address it cannot listen on "
                    "stops the agent at start."),
]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
