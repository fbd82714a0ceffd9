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


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score(rows: Sequence[Row], tasks: Sequence[str], baseline: str) -> dict[str, Any]:
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
