"""``nfvha-guest``: the in-VM heartbeat agent's command line.

``nfvha-guest [options]`` runs the agent; ``nfvha-guest group ...`` hands over
to nfvha.guest.group (server-group messaging) when that module is present: it
must provide ``add_arguments(parser)`` and ``main(args) -> int``.
Options may also come from an INI file (``--config``, section ``[guest]``);
the command line wins. Standard library only, Python 3.8.
"""
from __future__ import annotations

import argparse
import configparser
import importlib
import logging
import sys
from typing import Any, Dict, List, Optional

from ..protocol import heartbeat as hb

DEFAULTS: Dict[str, Any] = {
    "device": "/dev/virtio-ports/cgcs.heartbeat",
    "interval_ms": 200,  # one interval + the response deadline: a hang seen in < 300 ms
    "corrective_action": "reboot",
    "name": None,
    "probe": [],
    "event_script": None,
    "log_level": "INFO",
    "single_port": False,
    "group_device": "/run/nfvha/cgcs.messaging",
}
INT_KEYS = ("interval_ms", "vote_secs", "shutdown_notice_secs", "suspend_notice_secs",
            "resume_notice_secs", "restart_secs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nfvha-guest",
        description="nfvha guest heartbeat agent: answers the host's challenges over "
                    "virtio-serial with this VM's health.",
    )
    p.add_argument("--config", help="INI file with a [guest] section (keys as the long "
                                    "options, with _; probes one per line)")
    p.add_argument("--device", help=f"virtio-serial port (default {DEFAULTS['device']})")
    p.add_argument("--interval-ms", type=int, help="heartbeat interval to register "
                                                   "(default 200)")
    p.add_argument("--corrective-action", choices=[a for a in hb.CORRECTIVE_ACTIONS
                                                   if a != "unknown"],
                   help="what the host should do on a failure (default reboot)")
    p.add_argument("--name", help="name to register (default: the host name)")
    p.add_argument("--probe", action="append", metavar="SPEC",
                   help="health probe, repeatable: exec:CMD, tcp:HOST:PORT, http:URL, "
                        "file:PATH, each with optional ,timeout_ms=N,period_ms=N")
    p.add_argument("--event-script", metavar="PATH",
                   help="run as PATH <revocable|irrevocable> <event_type> on host "
                        "notifications; exit 0 = accept")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    p.add_argument("--single-port", action="store_true", default=None,
                   help="OPNFV single-port mode: heartbeat and server group share the port "
                        "(the host must be set so too); server-group frames are relayed to "
                        "--group-device")
    p.add_argument("--group-device", metavar="PATH",
                   help="single-port: where the server-group port appears for "
                        f"GroupClient / nfvha-guest group (default {DEFAULTS['group_device']})")
    sub = p.add_subparsers(dest="command", metavar="{group}")
    group = sub.add_parser("group", help="server-group messaging (nfvha.guest.group)")
    module = _group_module()
    if module is not None:
        module.add_arguments(group)
    else:
        group.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _group_module() -> Any:
    try:
        module = importlib.import_module("nfvha.guest.group")
    except ImportError:
        return None
    if hasattr(module, "add_arguments") and hasattr(module, "main"):
        return module
    return None


def load_config(path: str) -> Dict[str, Any]:
    parser = configparser.ConfigParser()
    with open(path, encoding="utf-8") as f:
        parser.read_file(f)
    if not parser.has_section("guest"):
        return {}
    out: Dict[str, Any] = {}
    for key, value in parser.items("guest"):
        key = key.replace("-", "_")
        if key in ("probe", "probes"):
            out["probe"] = [line.strip() for line in value.splitlines() if line.strip()]
        elif key in INT_KEYS:
            out[key] = int(value)
        else:
            out[key] = value
    return out


def resolve(args: argparse.Namespace) -> Dict[str, Any]:
    """Defaults < config file < command line."""
    settings = dict(DEFAULTS)
    if args.config:
        settings.update(load_config(args.config))
    for key in ("device", "interval_ms", "corrective_action", "name", "event_script",
                "log_level", "single_port", "group_device"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    for key in INT_KEYS:
        if key in settings and not 0 < int(settings[key]) <= hb.UINT32_MAX:
            raise ValueError(f"{key} must be a positive 32-bit integer")
    if args.probe:
        settings["probe"] = list(settings.get("probe") or []) + args.probe
    return settings


def _bool(value: Any) -> bool:
    # from the INI file it is a string
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "group":
        module = _group_module()
        if module is None:
            print("nfvha-guest group: server-group messaging is not available in this build",
                  file=sys.stderr)
            return 2
        return int(module.main(args) or 0)
    try:
        settings = resolve(args)
    except (OSError, ValueError, configparser.Error) as exc:
        parser.error(f"config: {exc}")
    logging.basicConfig(level=str(settings["log_level"]).upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from .agent import Agent  # after logging is set up

    extra = {k: settings[k] for k in INT_KEYS if k in settings and k != "interval_ms"}
    if settings["corrective_action"] not in hb.CORRECTIVE_ACTIONS:
        parser.error(f"unknown corrective action {settings['corrective_action']!r}")
    try:
        agent = Agent(
            settings["device"], name=settings["name"], interval_ms=int(settings["interval_ms"]),
            corrective_action=settings["corrective_action"], probes=settings["probe"],
            event_script=settings["event_script"], **extra,
            single_port=_bool(settings["single_port"]), group_device=settings["group_device"],
        )
    except ValueError as exc:  # a bad probe spec (ProbeSpecError) or setting
        parser.error(str(exc))
    return agent.run_forever()


if __name__ == "__main__":
    sys.exit(main())
