"""`nfvha verify model|run` — hooked into the nfvha command by nfvha/cli/main.py."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import List

from . import kaos
from . import sal as sal_mod
from .model import load
from .runner import (
    SCENARIO_NAMES,
    NotAvailable,
    ScenarioResult,
    Session,
    full_report,
    latest_verdicts,
    run_one,
    summary,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("verify", help="VIM HA verification: requirement model, fault "
                              "injection, measured verdicts")
    sub = p.add_subparsers(dest="verify_cmd", required=True)
    m = sub.add_parser("model", help="render the KAOS requirement diagram (Graphviz)")
    m.add_argument("--format", choices=("svg", "png", "dot"), default=None,
                   help="default: from the output file's extension, else svg")
    m.add_argument("--results", metavar="RUN.json",
                   help="colour each requirement by its verdict in this run's JSON")
    m.add_argument("-o", "--output", required=True, metavar="FILE")
    r = sub.add_parser("run", help="run scenarios, measure, judge each requirement")
    r.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                   help=f"{', '.join(SCENARIO_NAMES)} or a Yardstick test case .yaml")
    r.add_argument("--sal", default="SAL1", help="target level: SAL1 (default), SAL2, SAL3")
    r.add_argument("--json", action="store_true", help="print the result as one JSON document")
    r.add_argument("--report-dir", metavar="DIR", help="write run-*.json and run-*.html here")
    r.add_argument("--cluster-manager", choices=("auto", "pacemaker", "supervisor"),
                   default="auto", help="who restarts killed instances: Pacemaker (auto when "
                   "it can run here: root, pacemaker installed) or nfvha's stand-in supervisor")
    return p


def run(args: argparse.Namespace) -> int:
    if args.verify_cmd == "model":
        return _model(args)
    return asyncio.run(_run(args))


def _model(args: argparse.Namespace) -> int:
    fmt = args.format or (args.output.rsplit(".", 1)[-1] if "." in args.output else "svg")
    if fmt not in ("svg", "png", "dot"):
        fmt = "svg"
    verdicts = {}
    if args.results:
        try:
            with open(args.results) as f:
                verdicts = latest_verdicts(json.load(f))
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            print(f"nfvha verify model: cannot read results {args.results}: {exc}",
                  file=sys.stderr)
            return 2
    try:
        data = kaos.render(kaos.to_dot(load(), verdicts), fmt)
    except RuntimeError as exc:
        print(f"nfvha verify model: {exc}", file=sys.stderr)
        return 2
    with open(args.output, "wb") as f:
        f.write(data)
    print(args.output)
    return 0


async def _run(args: argparse.Namespace) -> int:
    try:
        target = sal_mod.get(args.sal)
    except ValueError as exc:
        print(f"nfvha verify run: {exc}", file=sys.stderr)
        return 2
    model = load()
    results: List[ScenarioResult] = []
    session = Session(args.cluster_manager)
    try:
        for name in args.scenarios:
            try:
                results.append(await run_one(name, target, model, session))
            except NotAvailable as exc:
                print(f"nfvha verify run: {exc}", file=sys.stderr)
                return 3
            except (ValueError, RuntimeError, OSError) as exc:
                print(f"nfvha verify run: {name}: {exc}", file=sys.stderr)
                return 2
            if not args.json:
                _print_human(results[-1])
    finally:
        await session.close()
    if args.report_dir:
        from .report import write
        j, h = write(full_report(results, target), args.report_dir, model)
        print(f"report: {h} (data: {j})", file=sys.stderr)
    if args.json:
        print(json.dumps(summary(results, target)))
    failed = any(v.verdict == "fail" for r in results for v in r.verdicts + r.extra_verdicts)
    return 1 if failed else 0


def _print_human(r: ScenarioResult) -> None:
    s = r.summary()
    def ms(v: object) -> str:
        return "none" if v is None else f"{v} ms"

    print(f"== {s['name']}: detection {ms(s['detection_ms'])}, outage {ms(s['outage_ms'])} "
          f"(+{ms(s['outage_precision_ms'])}), recovery {ms(s['recovery_ms'])}, "
          f"lost {s['lost']}, SAL reached: {r.sal_reached or 'none'}")
    for v in s["requirements"]:
        print(f"  {v['id']:<11} {v['verdict'].upper():<4}  {v['why']}")
