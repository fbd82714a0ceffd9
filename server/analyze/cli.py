"""`taskrouter-analyze LOG.jsonl`: turn the service's request log (telemetry.request_log) into an HTML
report (tasks, models, match and fallback rate over time, latency percentiles, cost routed vs. one
model) and print a short summary.

    taskrouter-analyze requests.jsonl --out report.html --baseline gpt-4o

Needs matplotlib for the charts: `pip install 'taskrouter[analyze]'`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from server.analyze.report import render_html, render_text
from server.analyze.stats import compute, read_log
from server.config import DEFAULTS_DIR
from server.targets import load_catalog


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter-analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="request log written by the service (JSONL)")
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML report to write")
    parser.add_argument(
        "--catalog", type=Path, default=DEFAULTS_DIR / "catalog.yaml", help="catalogue with the prices"
    )
    parser.add_argument(
        "--baseline",
        help="catalogue model to compare the routed cost with (default: the priciest model the log used)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.log.is_file():
        print(f"taskrouter-analyze: {args.log} does not exist", file=sys.stderr)
        return 2
    catalog = load_catalog(args.catalog)
    if args.baseline is not None and args.baseline not in catalog.models:
        known = ", ".join(sorted(catalog.models))
        print(
            f"taskrouter-analyze: --baseline {args.baseline!r} is not in {args.catalog}; known: {known}",
            file=sys.stderr,
        )
        return 2
    records, skipped = read_log(args.log)
    if not records:
        print(f"taskrouter-analyze: {args.log} has no request lines", file=sys.stderr)
        return 2
    stats = compute(records, skipped, catalog, args.baseline)
    try:
        page = render_html(stats, str(args.log))
    except ImportError:
        print(
            "taskrouter-analyze: the charts need matplotlib: pip install 'taskrouter[analyze]'",
            file=sys.stderr,
        )
        return 2
    args.out.write_text(page, encoding="utf-8")
    print(render_text(stats))
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
