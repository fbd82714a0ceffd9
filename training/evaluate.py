"""Evaluation of a classifier on a taxonomy: accuracy, macro-F1, fallback precision/recall/AUROC,
expected calibration error, confusion; and choosing the no-match threshold on validation rows."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score
from transformers import PreTrainedTokenizerBase

from models import TaskClassifier, TaskVectors, match_probabilities
from training.data import FALLBACK, Taxonomy
from training.encode import as_user, embed

# Without fallback rows, the threshold keeps this share of in-scope validation prompts matched.
IN_SCOPE_KEEP = 0.98


@dataclass
class Scored:
    """Similarities of each prompt to each task, with the true labels."""

    sims: np.ndarray  # [N, T]
    labels: list[str]
    tasks: list[str]

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sims.max(axis=1), self.sims.argmax(axis=1)

    def closed_accuracy(self) -> float:
        """Accuracy of the best task on in-scope rows, ignoring the threshold (zero-shot matching)."""
        _, index = self.best()
        hits = [
            self.tasks[i] == label for i, label in zip(index, self.labels, strict=True) if label != FALLBACK
        ]
        return float(np.mean(hits)) if hits else float("nan")

    def predict(self, threshold: float) -> list[str]:
        best, index = self.best()
        return [self.tasks[i] if b >= threshold else FALLBACK for b, i in zip(best, index, strict=True)]


def task_prototypes(
    model: TaskClassifier,
    tokenizer: PreTrainedTokenizerBase,
    taxonomy: Taxonomy,
    shots: int = 0,
    seed: int = 0,
) -> TaskVectors:
    """What prompts are scored against, as the server builds it: descriptions, plus `shots` train
    prompts per task (drawn with `seed`) standing in for the examples an operator would write, plus
    the checkpoint's learned examples of these descriptions if it kept some."""
    texts = [t.description for t in taxonomy.tasks]
    descriptions = model.describe(texts, embed(model, tokenizer, as_user(texts), side="task"))
    examples = [
        embed(model, tokenizer, as_user(chosen), side="task") if chosen else None
        for chosen in task_examples(taxonomy, shots, seed)
    ]
    return model.task_vectors(texts, descriptions, examples)


def task_examples(taxonomy: Taxonomy, shots: int, seed: int = 0) -> list[list[str]]:
    """Each task's example prompts: its own, plus `shots` train prompts (drawn with `seed`) standing
    in for the examples an operator would write."""
    rng = random.Random(seed)
    pool: dict[str, list[str]] = {}
    for row in taxonomy.rows("train", with_fallback=False):
        pool.setdefault(row.label, []).append(row.text)
    out = []
    for task in taxonomy.tasks:
        chosen = list(task.examples)
        if shots:
            candidates = pool.get(task.name, [])
            chosen += rng.sample(candidates, min(shots, len(candidates)))
        out.append(chosen)
    return out


def score(
    model: TaskClassifier,
    tokenizer: PreTrainedTokenizerBase,
    taxonomy: Taxonomy,
    split: str,
    shots: int = 0,
    limit: int | None = None,
    seed: int = 0,
) -> Scored:
    return score_shots(model, tokenizer, taxonomy, split, (shots,), limit, seed)[0]


def score_shots(
    model: TaskClassifier,
    tokenizer: PreTrainedTokenizerBase,
    taxonomy: Taxonomy,
    split: str,
    shots: Sequence[int],
    limit: int | None = None,
    seed: int = 0,
) -> list[Scored]:
    """One Scored per entry of `shots`; the prompts (the costly part) are embedded once.
    With `limit`, a seeded sample of that many rows."""
    rows = taxonomy.rows(split)
    if limit is not None and len(rows) > limit:
        rows = random.Random(seed).sample(rows, limit)
    prompts = embed(model, tokenizer, [r.messages for r in rows])
    out = []
    for n in shots:
        prototypes = task_prototypes(model, tokenizer, taxonomy, n, seed)
        sims = prototypes.similarity(prompts).float().cpu().numpy()
        out.append(Scored(sims, [r.label for r in rows], taxonomy.task_names))
    return out


def pick_threshold(val: list[Scored]) -> tuple[float, str]:
    """(threshold, how it was chosen) from validation rows of one or more taxonomies.

    With fallback rows: the value that maximises accuracy over in-scope rows (right task and
    matched) and fallback rows (unmatched) together. Without: the value that keeps IN_SCOPE_KEEP of
    the in-scope prompts matched.
    """
    best = np.concatenate([s.best()[0] for s in val])
    fallback = np.concatenate([np.array(s.labels) == FALLBACK for s in val])
    correct = np.concatenate([np.array([s.tasks[i] for i in s.best()[1]]) == np.array(s.labels) for s in val])
    if fallback.any() and (~fallback).any():
        # Midpoints between neighbouring scores (and both ends): a threshold never sits on a sample.
        values = np.unique(best)
        candidates = np.concatenate([[values[0] - 1e-3], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-3]])
        right = [((best >= t) & correct).sum() + ((best < t) & fallback).sum() for t in candidates]
        return float(candidates[int(np.argmax(right))]), "max accuracy on val with fallback rows"
    return float(
        np.quantile(best[~fallback], 1 - IN_SCOPE_KEEP)
    ), f"keeps {IN_SCOPE_KEEP:.0%} of val in scope"


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> tuple[float, list]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            ece += inside.mean() * gap
            table.append(
                [
                    float(lo),
                    float(hi),
                    int(inside.sum()),
                    float(confidence[inside].mean()),
                    float(correct[inside].mean()),
                ]
            )
    return float(ece), table


def metrics(scored: Scored, threshold: float, temperature: float) -> dict[str, Any]:
    """Every number of the evaluation report, for one split at one threshold."""
    labels = scored.labels
    predicted = scored.predict(threshold)
    best, _ = scored.best()
    truth = np.array(labels)
    in_scope = truth != FALLBACK
    correct = np.array(predicted) == truth
    probs, fallback_prob = match_probabilities(scored.sims, threshold, temperature)
    confidence = np.where(np.array(predicted) == FALLBACK, fallback_prob, probs.max(axis=1))
    ece, reliability = expected_calibration_error(confidence, correct)
    names = [*scored.tasks, FALLBACK]
    out: dict[str, Any] = {
        "rows": len(labels),
        "threshold": threshold,
        "accuracy": float(correct.mean()),
        "closed_set_accuracy": scored.closed_accuracy() if in_scope.any() else None,
        "in_scope_accuracy": float(correct[in_scope].mean()) if in_scope.any() else None,
        "macro_f1": float(
            f1_score(labels, predicted, labels=sorted(set(labels)), average="macro", zero_division=0)
        ),
        "ece": ece,
        "reliability": reliability,
        "labels": names,
        "confusion": confusion_matrix(labels, predicted, labels=names).tolist(),
    }
    if (~in_scope).any():
        is_fb = ~in_scope
        said_fb = np.array(predicted) == FALLBACK
        out["fallback_precision"] = float(precision_score(is_fb, said_fb, zero_division=0))
        out["fallback_recall"] = float(recall_score(is_fb, said_fb, zero_division=0))
        out["fallback_auroc"] = float(roc_auc_score(is_fb, -best)) if in_scope.any() else None
    return out
