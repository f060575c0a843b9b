"""The `nfvha` command: one entry point, a subcommand per role. Wiring only."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from nfvha import __version__

DB_HELP = ("SQLAlchemy URL of the store (default: [database] connection, else "
           "nfvha.sqlite in /var/lib/nfvha as root or ~/.local/state/nfvha)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-file", action="append", default=[], metavar="PATH",
                   help="oslo.config INI file (repeatable); see etc/nfvha/nfvha.conf.sample")
    p.add_argument("--debug", action="store_true", help="log at DEBUG level")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfvha", description="VM high availability from the inside out.")
    parser.add_argument("--version", action="version", version=f"nfvha {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="controller, compute agent and guests in one go; "
                       "faults injected, detection times shown")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--guests", type=int, default=5)
    p.add_argument("--interval-ms", type=int, default=200,
                   help="guest heartbeat interval (the guest agent's default)")
    p.add_argument("--rounds", type=int, default=None,
                   help="repeat the fault sequence N times (default 3; 1 with --qemu)")
    p.add_argument("--qemu", action="store_true",
                   help="real VMs under a real libvirtd (started here if none runs), "
                        "recovery carried out (needs root, QEMU, libvirt; builds the guest "
                        "image on first use)")

    for name, what in (("attach", "hot-plug nfvha's channels into a libvirt domain "
                                  "(live and in its definition)"),
                       ("detach", "remove nfvha's channels from a libvirt domain")):
        p = sub.add_parser(name, help=what)
        _add_common(p)
        p.add_argument("domain", metavar="DOMAIN", help="domain name or uuid")
        p.add_argument("--uri", help="libvirt URI (default [compute] libvirt_uri)")
        if name == "attach":
            p.add_argument("--messaging", action="store_true",
                           help="also the server-group messaging channel (cgcs.messaging)")
            p.add_argument("--channels-dir",
                           help="where the sockets go (default [compute] channels_dir)")

    p = sub.add_parser("all-in-one", help="controller + compute agent in one process "
                       "(in-process bus, SQLite) for one host with plain QEMU/libvirt")
    _add_common(p)
    p.add_argument("--instances-dir", help="directory of QEMU chardev sockets")
    p.add_argument("--api", metavar="HOST:PORT", help="REST API address")
    p.add_argument("--db", metavar="URL", help=DB_HELP)

    p = sub.add_parser("controller", help="run the controller (store, reporters, REST API)")
    _add_common(p)
    p.add_argument("--api", metavar="HOST:PORT")
    p.add_argument("--db", metavar="URL", help=DB_HELP)

    p = sub.add_parser("compute", help="run the compute agent (heartbeats local instances)")
    _add_common(p)
    p.add_argument("--instances-dir")

    p = sub.add_parser("guest", help="run the in-VM guest agent (same as nfvha-guest)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)

    for name, what in (("status", "instances and their heartbeat state"),
                       ("events", "fault events and their deliveries")):
        p = sub.add_parser(name, help=f"show {what} (from the REST API)")
        p.add_argument("--api", default="127.0.0.1:8780", metavar="HOST:PORT")
        p.add_argument("--json", action="store_true")

    p = sub.add_parser("recovery", help="show, pause, resume or re-arm an instance's "
                       "recovery (from the REST API)")
    p.add_argument("op", choices=["show", "pause", "resume", "rearm"],
                   help="pause/resume: its faults get no action meanwhile; rearm: clear "
                        "the exhausted mark and the counted actions")
    p.add_argument("uuid", metavar="UUID", help="the instance")
    p.add_argument("--api", default="127.0.0.1:8780", metavar="HOST:PORT")
    p.add_argument("--reason", metavar="TEXT", help="why (pause), shown with skipped faults")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="run the benchmarks (same as make bench)")
    p.add_argument("args", nargs=argparse.REMAINDER)

    try:
        from nfvha.verify import cli as verify_cli
    except ImportError:
        verify_cli = None
    if verify_cli is not None:
        verify_cli.add_parser(sub)
    return parser


def _setup_logging(debug: bool, quiet: bool = False) -> None:
    # The demo prints its own table; the services' warnings (the very faults
    # it injects) would only interleave with it.
    level = logging.DEBUG if debug else (logging.ERROR if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmd = args.command
    if cmd == "guest":
        from nfvha.guest.cli import main as guest_main
        return guest_main(args.args)
    if cmd == "verify":
        from nfvha.verify import cli as verify_cli
        return verify_cli.run(args)
    if cmd in ("status", "events"):
        from nfvha.cli.show import show
        return show(cmd, args.api, args.json)
    if cmd == "recovery":
        from nfvha.cli.recovery import recovery
        return recovery(args.op, args.uuid, args.api, args.reason, args.json)
    if cmd == "bench":
        from nfvha.cli.bench import run_bench
        return run_bench(args.args)

    from nfvha.cli import services
    conf = services.load_conf(args.config_file)
    if cmd == "demo":
        _setup_logging(args.debug, quiet=True)
        if args.qemu:
            from nfvha.demo.qemu_libvirt import run_qemu_demo
            return asyncio.run(run_qemu_demo(conf, interval_ms=args.interval_ms,
                                             rounds=args.rounds or 1, as_json=args.json))
        from nfvha.demo.run import run_demo
        return asyncio.run(run_demo(conf, guests=args.guests, interval_ms=args.interval_ms,
                                    rounds=args.rounds or 3, as_json=args.json))
    if cmd in ("attach", "detach"):
        _setup_logging(args.debug)
        return _hotplug(conf, args)
    _setup_logging(args.debug)
    runner = {"all-in-one": services.run_all_in_one, "controller": services.run_controller,
              "compute": services.run_compute}[cmd]
    try:
        return asyncio.run(runner(conf, args))
    except KeyboardInterrupt:
        return 130


def _hotplug(conf: object, args: argparse.Namespace) -> int:
    try:
        import libvirt
    except ImportError:
        print(f"nfvha {args.command} needs libvirt-python: pip install 'nfvha[libvirt]'",
              file=sys.stderr)
        return 1

    from nfvha.compute import hotplug

    uri = args.uri or conf.compute.libvirt_uri  # type: ignore[attr-defined]
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        print(f"nfvha {args.command}: cannot reach libvirt at {uri}: "
              f"{exc.get_error_message()}", file=sys.stderr)
        return 1
    try:
        if args.command == "attach":
            result = hotplug.attach_channels(
                conn, args.domain, messaging=args.messaging,
                channels_dir=args.channels_dir or conf.compute.channels_dir)  # type: ignore
        else:
            result = hotplug.detach_channels(conn, args.domain)
    except hotplug.HotplugError as exc:
        print(f"nfvha {args.command}: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
