"""Scoring a router on a labelled prompt file: accuracy, fallback precision and recall, the confusion
matrix, and the cost of routing vs. sending every prompt to one model. Pure functions; the console API
runs the classifications."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.routers import FALLBACK


@dataclass(frozen=True)
class Row:
    label: str
    predicted: str
    routed_cost_usd: float  # the policy's first candidate, at the request's estimated tokens
    baseline_cost_usd: float
    best_task: str = ""  # the most similar task and its similarity, whatever the threshold
    best_similarity: float = 0.0


# Thresholds tried for the suggestion: the router's decision is "best similarity >= threshold".
SWEEP = tuple(round(0.05 * i, 2) for i in range(-4, 20))


def threshold_sweep(rows: Sequence[Row], current: float) -> dict[str, Any]:
    """Accuracy at each threshold (and the router's own): what the operator would get by changing it."""

    def accuracy(threshold: float) -> float:
        hits = sum((r.best_task if r.best_similarity >= threshold else FALLBACK) == r.label for r in rows)
        return hits / len(rows)

    points = [{"threshold": t, "accuracy": accuracy(t)} for t in sorted({*SWEEP, round(current, 4)})]
    best = max(points, key=lambda p: (p["accuracy"], -abs(p["threshold"] - current)))
    return {"current": current, "points": points, "best": best}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score(
    rows: Sequence[Row], tasks: Sequence[str], baseline: str, threshold: float | None = None
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
        "threshold": threshold_sweep(rows, threshold) if threshold is not None and rows else None,
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
