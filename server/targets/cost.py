"""The one cost model: what a traffic mix costs routed, against sending all of it to one baseline model.

A mix is a list of `Load`s: per task (and the model routing sends it to), how many requests, and how
many input and output tokens each has on average. Loads come from a request log (server/analyze/
cost.py measures them per task and model), from a labelled file (the console's Evaluate), or are stated
("700,000 classify requests a month, 300 tokens in, 20 out, on gpt-4o-mini"). Prices come from the
catalogue. `project` prices the mix; `table` prints it the way a budget is written: per task, routed
cost, baseline cost, saving and saving %, and the total.

Costs are computed in floating point from per-million-token prices and rounded to the cent only when
printed, so a table adds up to the total the same way a spreadsheet's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.targets.catalog import Catalog


@dataclass(frozen=True)
class Load:
    task: str
    model: str  # where routing sends it
    requests: float
    input_tokens: float  # mean per request
    output_tokens: float  # mean per request


@dataclass(frozen=True)
class TaskCost:
    task: str
    models: tuple[str, ...]
    requests: float
    routed_usd: float
    baseline_usd: float

    @property
    def saving_usd(self) -> float:
        return self.baseline_usd - self.routed_usd

    @property
    def saving(self) -> float | None:
        """The saving as a share of the baseline cost; None when the baseline costs nothing."""
        return self.saving_usd / self.baseline_usd if self.baseline_usd > 0 else None


@dataclass(frozen=True)
class Projection:
    baseline_model: str
    tasks: tuple[TaskCost, ...]  # in the order the loads named them
    total: TaskCost


def unpriced(loads: Sequence[Load], catalog: Catalog) -> list[str]:
    """Models in `loads` the catalogue has no price for (they cannot be costed)."""
    return sorted({load.model for load in loads} - set(catalog.models))


def project(loads: Sequence[Load], catalog: Catalog, baseline: str) -> Projection:
    """Price `loads` routed and at `baseline`; raises KeyError naming a model the catalogue lacks."""
    missing = unpriced(loads, catalog) + ([baseline] if baseline not in catalog.models else [])
    if missing:
        raise KeyError(f"no price for {', '.join(missing)} in the catalogue")
    base = catalog.models[baseline]
    by_task: dict[str, list[Load]] = {}
    for load in loads:
        by_task.setdefault(load.task, []).append(load)
    rows = []
    for task, task_loads in by_task.items():
        routed = sum(
            load.requests * catalog.models[load.model].cost_usd(load.input_tokens, load.output_tokens)
            for load in task_loads
        )
        baseline_usd = sum(
            load.requests * base.cost_usd(load.input_tokens, load.output_tokens) for load in task_loads
        )
        models = tuple(dict.fromkeys(load.model for load in task_loads))
        rows.append(TaskCost(task, models, sum(load.requests for load in task_loads), routed, baseline_usd))
    total = TaskCost(
        "total",
        tuple(dict.fromkeys(m for row in rows for m in row.models)),
        sum(r.requests for r in rows),
        sum(r.routed_usd for r in rows),
        sum(r.baseline_usd for r in rows),
    )
    return Projection(baseline, tuple(rows), total)


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(projection: Projection, period: str = "month") -> str:
    """A Markdown table: per task, requests, routed model(s), routed cost, baseline cost, saving, saving %."""
    base = projection.baseline_model
    lines = [
        f"| task | requests / {period} | routed to | routed cost | all on {base} | saving | saving % |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in (*projection.tasks, projection.total):
        name = f"**{row.task}**" if row is projection.total else row.task
        models = ", ".join(row.models) if row is not projection.total else ""
        lines.append(
            f"| {name} | {row.requests:,.0f} | {models} | {_usd(row.routed_usd)} | {_usd(row.baseline_usd)} "
            f"| {_usd(row.saving_usd)} | {_share(row.saving)} |"
        )
    return "\n".join(lines)
