"""`taskrouter-analyze LOG.jsonl`: turn the service's request log (telemetry.request_log) into an HTML
report (tasks, models, match and fallback rate over time, latency percentiles, cost routed vs. one
model) and print a short summary. `taskrouter-analyze cost`: the monthly bill per task, routed vs one
baseline model, from the log and/or stated volumes and tokens (server/analyze/cost.py).

    taskrouter-analyze requests.jsonl --out report.html --baseline gpt-4o --router support
    taskrouter-analyze cost requests.jsonl --baseline gpt-4o --month

Both take `--router`, `--api` (repeatable) and `--since` / `--until` (epoch seconds or ISO 8601, UTC).
The report needs matplotlib for the charts: `pip install 'taskrouter[analyze]'`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.analyze import cost
from server.analyze.report import render_html, render_text
from server.analyze.stats import compute, parse_time, read_log, select
from server.config import DEFAULTS_DIR
from server.targets import Catalog, load_catalog
from server.targets.cost import project, table, unpriced
from server.telemetry import CLASSIFYING_APIS

SHIPPED_CATALOG = DEFAULTS_DIR / "catalog.yaml"


class Refused(Exception):
    """A usage error: printed as `taskrouter-analyze: <message>`, exit status 2."""


def _common(parser: argparse.ArgumentParser, log_required: bool) -> None:
    nargs = None if log_required else "?"
    parser.add_argument("log", type=Path, nargs=nargs, help="request log written by the service (JSONL)")
    parser.add_argument(
        "--catalog",
        type=Path,
        help=f"catalogue with the prices (default: the shipped one, {SHIPPED_CATALOG}; say so when the "
        "service ran with its own)",
    )
    parser.add_argument("--baseline", help="catalogue model to compare the routed cost with")
    parser.add_argument("--router", help="only this router's requests")
    parser.add_argument("--api", action="append", default=[], choices=CLASSIFYING_APIS, help="only this API")
    parser.add_argument("--since", type=parse_time, help="only requests at or after this time")
    parser.add_argument("--until", type=parse_time, help="only requests before this time")


def _report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter-analyze", description=__doc__.split("\n\n")[0])
    _common(parser, log_required=True)
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML report to write")
    return parser


def _cost_parser() -> argparse.ArgumentParser:
    description = (cost.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="taskrouter-analyze cost", description=description)
    _common(parser, log_required=False)
    cost.add_arguments(parser)
    return parser


def _catalog(args: argparse.Namespace) -> Catalog:
    path = args.catalog or SHIPPED_CATALOG
    catalog = load_catalog(path)
    if args.baseline is not None and args.baseline not in catalog.models:
        known = ", ".join(sorted(catalog.models))
        raise Refused(f"--baseline {args.baseline!r} is not in {path}; known: {known}")
    return catalog


def _records(args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    if not args.log.is_file():
        raise Refused(f"{args.log} does not exist")
    records, skipped = read_log(args.log)
    chosen = select(records, args.router, args.api, args.since, args.until)
    if not chosen:
        what = "request lines" if not records else "request lines matching --router/--api/--since/--until"
        raise Refused(f"{args.log} has no {what}")
    return chosen, skipped


def _warn_unpriced(models: Sequence[str], catalog_path: Path | None) -> None:
    if models:
        where = (
            catalog_path or f"the shipped catalogue ({SHIPPED_CATALOG}; --catalog names the service's own)"
        )
        print(f"taskrouter-analyze: no price in {where} for {', '.join(models)}: left out", file=sys.stderr)


def report(argv: Sequence[str]) -> int:
    args = _report_parser().parse_args(argv)
    catalog = _catalog(args)
    records, skipped = _records(args)
    used = {r["model"] for r in records if r.get("model")}
    _warn_unpriced(sorted(used - set(catalog.models)), args.catalog)
    stats = compute(records, skipped, catalog, args.baseline)
    try:
        page = render_html(stats, str(args.log))
    except ImportError:
        raise Refused("the charts need matplotlib: pip install 'taskrouter[analyze]'") from None
    args.out.write_text(page, encoding="utf-8")
    print(render_text(stats))
    print(f"report: {args.out}")
    return 0


def cost_table(argv: Sequence[str]) -> int:
    args = _cost_parser().parse_args(argv)
    if args.baseline is None:
        raise Refused("cost needs --baseline MODEL: the one model everything would otherwise go to")
    catalog = _catalog(args)
    try:
        stated = cost.parse_stated(args.volume, args.tokens, args.model)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    measured, span_s = [], 0.0
    if args.log is not None:
        records, _ = _records(args)
        measured = cost.measured_loads(records)
        span_s = records[-1]["ts"] - records[0]["ts"]
        if not measured and not stated.volume:
            raise Refused(f"{args.log} has no served requests with token counts (Chat, chat.completions)")
    elif not stated.volume:
        raise Refused("give a request log, or --volume/--tokens/--model for every task")
    if args.month and span_s <= 0:
        raise Refused("--month needs a log spanning some time")
    scale = cost.MONTH_S / span_s if args.month else 1.0
    try:
        loads = cost.combine(measured, stated, scale)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    missing = unpriced(loads, catalog)
    _warn_unpriced(missing, args.catalog)
    loads = [load for load in loads if load.model not in missing]
    if not loads:
        raise Refused("nothing left to price")
    period = "month" if args.month or (stated.volume and not measured) else "log"
    print(table(project(loads, catalog, args.baseline), period))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["cost"]:
            return cost_table(argv[1:])
        return report(argv)
    except Refused as exc:
        print(f"taskrouter-analyze: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
