"""Draw a Stats as one self-contained HTML page (inline SVG charts, no scripts, no network) and as a
short text summary for the terminal."""

from __future__ import annotations

import datetime as dt
import html
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from server.analyze.stats import Stats

FALLBACK = "fallback"
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #dde}
.sub{color:#667} .tiles{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.tile{border:1px solid #dde;border-radius:8px;padding:.6rem 1rem;min-width:140px}
.tile b{display:block;font-size:1.4rem} .grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{padding:.25rem .7rem;border-bottom:1px solid #eef;
text-align:right} td:first-child,th:first-child{text-align:left} svg{max-width:100%;height:auto}
"""


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _usd(x: float) -> str:
    return f"${x:.6f}" if x < 0.01 else f"${x:,.4f}"


def _figure(draw: Callable[[Any], None], width: float = 5.2, height: float = 2.8) -> str:
    """One matplotlib figure as inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    draw(ax)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]


def _times(stats: Stats) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(b.start, dt.UTC) for b in stats.buckets]


def _rates_chart(stats: Stats) -> str:
    def draw(ax: Any) -> None:
        times = _times(stats)
        ax.bar(
            times, [b.requests for b in stats.buckets], width=stats.bucket_s / 86400 * 0.8, color="#c9d3e6"
        )
        ax.set_ylabel("requests per bucket")
        rates = ax.twinx()
        match = [np.nan if b.match_rate is None else 100 * b.match_rate for b in stats.buckets]
        rates.plot(times, match, color="#2463eb", marker=".", label="match rate")
        rates.plot(times, [100 - m for m in match], color="#e8590c", marker=".", label="fallback rate")
        rates.set_ylim(0, 105)
        rates.set_ylabel("% of classified")
        rates.legend(loc="lower left", fontsize=8)
        ax.tick_params(axis="x", labelsize=8, rotation=20)

    return _figure(draw, 10.4, 3.0)


def _bars(labels: list[str], values: list[float], colors: list[str], xlabel: str) -> str:
    def draw(ax: Any) -> None:
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        ax.set_xlabel(xlabel)
        ax.tick_params(axis="y", labelsize=8)

    return _figure(draw, 5.2, max(1.6, 0.32 * len(labels) + 0.8))


def _latency_chart(stats: Stats) -> str:
    def draw(ax: Any) -> None:
        times = _times(stats)
        for q, color in ((50, "#2463eb"), (99, "#c92a2a")):
            ys = [np.percentile(b.latencies, q) if b.latencies else np.nan for b in stats.buckets]
            ax.plot(times, ys, marker=".", color=color, label=f"p{q}")
        ax.set_ylabel("ms (answered requests)")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelsize=8, rotation=20)

    return _figure(draw)


def _confidence_chart(stats: Stats) -> str:
    def draw(ax: Any) -> None:
        ax.hist(stats.confidence, bins=np.linspace(0, 1, 21), color="#5c7cfa")
        ax.set_xlabel("best task's match probability")
        ax.set_ylabel("prompts")

    return _figure(draw)


def _cost_chart(stats: Stats) -> str:
    assert stats.cost is not None
    cost = stats.cost

    def draw(ax: Any) -> None:
        times = [dt.datetime.fromtimestamp(t, dt.UTC) for t, _, _ in cost.cumulative]
        ax.plot(times, [r for _, r, _ in cost.cumulative], color="#2b8a3e", label="routed")
        ax.plot(
            times,
            [b for _, _, b in cost.cumulative],
            color="#868e96",
            ls="--",
            label=f"all to {cost.baseline_model}",
        )
        ax.set_ylabel("cumulative USD")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelsize=8, rotation=20)

    return _figure(draw)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _ms_rows(table: dict[str, dict[str, float]]) -> list[list[Any]]:
    return [
        [name, int(p["n"]), f"{p['p50']:.2f}", f"{p['p90']:.2f}", f"{p['p99']:.2f}", f"{p['max']:.2f}"]
        for name, p in table.items()
    ]


def render_html(stats: Stats, source: str) -> str:
    fallback = stats.classified - stats.matched
    tiles = [
        ("requests", f"{stats.requests:,}"),
        ("answered", _pct(stats.outcomes["OK"] / stats.requests)),
        ("match rate", _pct(stats.match_rate)),
        ("fallback rate", _pct(fallback / stats.classified if stats.classified else None)),
    ]
    if "Classify" in stats.latency:
        tiles.append(
            (
                "Classify p50 / p99",
                f"{stats.latency['Classify']['p50']:.1f} / {stats.latency['Classify']['p99']:.1f} ms",
            )
        )
    if stats.cost is not None and stats.cost.saving is not None:
        tiles.append((f"saved vs {stats.cost.baseline_model}", _pct(stats.cost.saving)))
    parts = [
        f"<h1>taskrouter traffic report</h1><div class=sub>{html.escape(source)}: {_when(stats.first_ts)} to "
        f"{_when(stats.last_ts)}, buckets of {stats.bucket_s:g} s"
        + (f"; {stats.skipped_lines} unreadable lines skipped" if stats.skipped_lines else "")
        + "</div>",
        "<div class=tiles>"
        + "".join(f"<div class=tile>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in tiles)
        + "</div>",
        "<h2>Traffic, match rate and fallback rate over time</h2>",
        _rates_chart(stats),
    ]
    if stats.tasks:
        tasks = stats.tasks.most_common()
        labels = [f"{router} / {task}" for (router, task), _ in tasks]
        colors = ["#e8590c" if task == FALLBACK else "#2463eb" for (_, task), _ in tasks]
        task_svg = _bars(labels, [n for _, n in tasks], colors, "classified prompts")
        models = stats.models.most_common()
        model_svg = (
            _bars([m for m, _ in models], [n for _, n in models], ["#2b8a3e"] * len(models), "served")
            if models
            else "<p>No model answered a request (Classify or Route only).</p>"
        )
        if stats.planned_models:
            planned = ", ".join(f"{html.escape(m)} {n}" for m, n in stats.planned_models.most_common())
            model_svg += f"<p>Planned only (Route, console Playground; never called): {planned}</p>"
        parts += [
            "<div class=grid><div><h2>Tasks</h2>",
            task_svg,
            "</div><div><h2>Models</h2>",
            model_svg,
            "</div></div>",
        ]
    parts += ["<div class=grid><div><h2>Latency over time</h2>", _latency_chart(stats), "</div>"]
    if stats.confidence:
        parts += ["<div><h2>Confidence</h2>", _confidence_chart(stats), "</div>"]
    parts += ["</div><h2>Latency percentiles (ms, answered requests)</h2>"]
    head = ["", "n", "p50", "p90", "p99", "max"]
    parts.append(_table(["API", *head[1:]], _ms_rows(stats.latency)))
    if stats.stages:
        parts.append(_table(["classifier stage", *head[1:]], _ms_rows(stats.stages)))
    if stats.target_ms:
        parts.append(_table(["model (first event / answer)", *head[1:]], _ms_rows(stats.target_ms)))
    if stats.cost is not None and stats.cost.priced:
        c = stats.cost
        parts += [
            f"<h2>Cost: routed vs. everything to {html.escape(c.baseline_model)}</h2>",
            f"<p>{c.priced:,} priced requests ({c.estimated:,} of them Route answers, priced from token "
            f"estimates): routed {_usd(c.routed_usd)}, all to {html.escape(c.baseline_model)} "
            f"{_usd(c.baseline_usd)}, saving <b>{_pct(c.saving)}</b>.</p>",
            _cost_chart(stats),
            _table(
                ["model", "USD"], [[m, _usd(v)] for m, v in sorted(c.by_model.items(), key=lambda x: -x[1])]
            ),
        ]
    parts += ["<h2>Outcomes and target errors</h2>"]
    parts.append(_table(["outcome", "requests"], [[k, v] for k, v in stats.outcomes.most_common()]))
    if stats.target_errors:
        rows = [[m, o, n] for (m, o), n in stats.target_errors.most_common()]
        parts.append(_table(["model", "failed attempt", "count"], rows))
    parts.append(f"<p>Fallbacks taken (a later candidate answered): {stats.fallbacks_taken}</p>")
    body = "\n".join(parts)
    head = f"<meta charset=utf-8><title>taskrouter report</title><style>{_CSS}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def render_text(stats: Stats) -> str:
    lines = [
        f"{stats.requests} requests, {_when(stats.first_ts)} to {_when(stats.last_ts)}",
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in stats.outcomes.most_common()),
        f"classified {stats.classified}: match rate {_pct(stats.match_rate)}, "
        f"fallback {stats.classified - stats.matched}",
    ]
    lines += [f"  {router}/{task}: {n}" for (router, task), n in stats.tasks.most_common(10)]
    if stats.models:
        lines.append("models served: " + ", ".join(f"{m} {n}" for m, n in stats.models.most_common()))
    if stats.planned_models:
        planned = ", ".join(f"{m} {n}" for m, n in stats.planned_models.most_common())
        lines.append(f"planned only (Route, Playground; never called): {planned}")
    for api, p in stats.latency.items():
        lines.append(
            f"{api}: p50 {p['p50']:.2f} ms, p90 {p['p90']:.2f} ms, p99 {p['p99']:.2f} ms (n={int(p['n'])})"
        )
    if stats.cost is not None and stats.cost.priced:
        c = stats.cost
        lines.append(
            f"cost: routed {_usd(c.routed_usd)} vs all to {c.baseline_model} {_usd(c.baseline_usd)} "
            f"(saving {_pct(c.saving)}, {c.priced} priced requests)"
        )
    return "\n".join(lines)
