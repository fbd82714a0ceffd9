"""Scoring a router on a labelled prompt file: accuracy, fallback precision and recall, the confusion
matrix, and the cost of routing vs. sending every prompt to one model. Pure functions; the console API
runs the classifications."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidInput
from server.routing.registry import CompiledRouter
from server.routing.spec import FALLBACK


@dataclass(frozen=True)
class Row:
    label: str
    predicted: str
    routed_cost_usd: float  # the policy's first candidate, at the request's estimated tokens
    baseline_cost_usd: float
    best_task: str = ""  # the most similar task, whatever the threshold
    best_value: float = 0.0  # the router's no-match criterion for it (matched: >= threshold)


# Thresholds tried for the suggestion, in each criterion's units (models/nomatch.py): cosines, or
# standard deviations above unrelated traffic.
SWEEPS = {
    "similarity": tuple(round(0.05 * i, 2) for i in range(-4, 20)),
    "calibrated": tuple(round(0.1 * i, 2) for i in range(-20, 61)),
}


def output_tokens_per_task(
    router: CompiledRouter,
    stated: Mapping[str, int],
    measured: Callable[[str, str], float | None],
    default: int,
) -> dict[str, dict[str, Any]]:
    """What each task's answers are priced at: the tokens stated for it, else the mean of the answers
    this process served for it, else the service's default (targets.default_output_tokens)."""
    names = [t.name for t in router.spec.tasks] + [FALLBACK]
    unknown = sorted(set(stated) - set(names))
    if unknown:
        raise InvalidInput(f"output_tokens names {', '.join(map(repr, unknown))}; tasks: {', '.join(names)}")
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        served = measured(router.spec.name, name)
        if name in stated:
            out[name] = {"tokens": stated[name], "source": "stated"}
        elif served is not None:
            out[name] = {"tokens": served, "source": "measured"}
        else:
            out[name] = {"tokens": default, "source": "default"}
    return out


def threshold_sweep(rows: Sequence[Row], current: float, criterion: str = "similarity") -> dict[str, Any]:
    """Accuracy at each threshold (and the router's own): what the operator would get by changing it."""

    def accuracy(threshold: float) -> float:
        hits = sum((r.best_task if r.best_value >= threshold else FALLBACK) == r.label for r in rows)
        return hits / len(rows)

    tried = sorted({*SWEEPS[criterion], round(current, 4)})
    points = [{"threshold": t, "accuracy": accuracy(t)} for t in tried]
    best = max(points, key=lambda p: (p["accuracy"], -abs(p["threshold"] - current)))
    return {"current": current, "criterion": criterion, "points": points, "best": best}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score(
    rows: Sequence[Row],
    tasks: Sequence[str],
    baseline: str,
    threshold: float | None = None,
    criterion: str = "similarity",
) -> dict[str, Any]:
    labels = [*tasks, FALLBACK]
    unknown = sorted({r.label for r in rows} - set(labels))
    names = labels + unknown  # a label the router does not have still gets a row of the matrix
    counts = Counter((r.label, r.predicted) for r in rows)
    predicted_fallback = sum(r.predicted == FALLBACK for r in rows)
    labelled_fallback = sum(r.label == FALLBACK for r in rows)
    both = counts[(FALLBACK, FALLBACK)]
    routed = sum(r.routed_cost_usd for r in rows)
    base = sum(r.baseline_cost_usd for r in rows)
    return {
        "threshold": threshold_sweep(rows, threshold, criterion) if threshold is not None and rows else None,
        "rows": len(rows),
        "accuracy": _ratio(sum(r.label == r.predicted for r in rows), len(rows)),
        "fallback_precision": _ratio(both, predicted_fallback),
        "fallback_recall": _ratio(both, labelled_fallback),
        "labels": names,
        "unknown_labels": unknown,
        "confusion": [[counts[(t, p)] for p in labels] for t in names],  # rows: label, columns: predicted
        "predicted_labels": labels,
        "cost": {
            "baseline_model": baseline,
            "routed_usd": routed,
            "baseline_usd": base,
            "saving": 1 - routed / base if base > 0 else None,
        },
    }
