"""The no-match decision: when does a prompt fit none of a router's tasks?

A raw cosine threshold means something different on every task set: descriptions written in one
style sit at 0.3 from everything, in another at 0.1; examples (which read like prompts) lift every
similarity; a broad task ("general questions") is close to any prompt. So the decision compares
each task's similarity with how similar *unrelated* prompts are to that same task:

- `calibrated` (the shipped default): a background corpus of everyday prompts of every kind
  (models/calibration/background_prompts.txt, embedded once at load) is scored against each task's
  prototype; a prompt's value is the z-score of its best task's similarity within that task's
  background distribution, (s - mean_t) / std_t. "3.2" reads the same on any router: the prompt is
  3.2 standard deviations closer to the task than random traffic is, whatever the descriptions'
  style, the number of tasks or the examples.
- `similarity`: the best raw cosine, as before, for checkpoints and routers that set it.

The task itself is always the best raw similarity, so the criterion changes only whether a prompt
falls back, never which task it gets. A router with examples and fallback examples gets its
threshold fitted from them by cross-validation (`fit_threshold`); an explicit threshold wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BACKGROUND_FILE = Path(__file__).resolve().parent / "calibration" / "background_prompts.txt"
SIMILARITY = "similarity"
CALIBRATED = "calibrated"
CRITERIA = (CALIBRATED, SIMILARITY)
# A task whose background similarities barely vary (a handful of near-identical prompts) must not
# turn every small difference into a huge z-score.
_MIN_STD = 0.02
# Folds of the per-router cross-validation; fewer when tasks have fewer examples.
_FOLDS = 5
# With examples but no fallback examples, the fitted threshold keeps this share of them matched.
_KEEP_EXAMPLES = 0.95
# With fallback examples but no examples, it rises until this share of them falls back: without
# in-scope examples the cost of rising cannot be measured, so it stops short of catching them all.
_CATCH_FALLBACK = 0.7
# With both kinds, a lost in-scope example weighs this many missed fallback examples. Measured on
# held-out sets (training/README.md): equal weights caught 95% of out-of-domain prompts but cost
# 4.3 points of in-scope accuracy; 3:1 caught 93% for 2.5 points.
_IN_SCOPE_WEIGHT = 3.0


def background_prompts(path: Path = BACKGROUND_FILE) -> list[str]:
    """The background corpus: one prompt per line (blank lines and '#' comments skipped)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@dataclass(frozen=True)
class Calibration:
    """Per-task statistics of the background corpus's similarities to a router's prototypes."""

    mean: np.ndarray  # [T]
    std: np.ndarray  # [T]


def calibrate(prototypes: np.ndarray, background: np.ndarray) -> Calibration:
    """Background statistics for prototypes [T, D] from background embeddings [B, D]."""
    sims = background.astype(np.float32) @ prototypes.astype(np.float32).T
    return Calibration(sims.mean(axis=0), np.maximum(sims.std(axis=0), _MIN_STD))


def criterion_value(
    similarities: np.ndarray, index: np.ndarray, criterion: str, cal: Calibration
) -> np.ndarray:
    """The criterion's value [N] for the task `index` [N] chosen in each row of similarities [N, T]."""
    best = np.take_along_axis(similarities, index[:, None], axis=1)[:, 0]
    if criterion == SIMILARITY:
        return best
    if criterion == CALIBRATED:
        return (best - cal.mean[index]) / cal.std[index]
    raise ValueError(f"criterion {criterion!r}; allowed: {', '.join(CRITERIA)}")


def decide_batch(similarities: np.ndarray, criterion: str, cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """(best task index [N], criterion value [N]); a row matches when its value >= the threshold."""
    index = similarities.argmax(axis=1)
    return index, criterion_value(similarities, index, criterion, cal)


@dataclass(frozen=True)
class Fit:
    """A router's fitted threshold and what cross-validation expects of it."""

    threshold: float
    fallback_precision: float | None  # None when there were no fallback examples to measure
    fallback_recall: float | None
    examples: int
    fallback_examples: int


def mix_prototypes(
    descriptions: torch.Tensor, examples: Sequence[torch.Tensor | None], weight: float
) -> torch.Tensor:
    """One unit-norm vector per task: the description, mixed with the mean of its examples when it
    has some (`weight` on the description)."""
    rows = []
    for description, task_examples in zip(descriptions, examples, strict=True):
        if task_examples is None or len(task_examples) == 0:
            rows.append(description)
        else:
            mean = torch.nn.functional.normalize(task_examples.mean(dim=0), dim=-1)
            rows.append(weight * description + (1.0 - weight) * mean)
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def fit_threshold(
    descriptions: np.ndarray,
    examples: Sequence[np.ndarray],
    fallback: np.ndarray,
    background: np.ndarray,
    criterion: str,
    default: float,
    description_weight: float,
) -> Fit:
    """Fit a router's threshold from its examples (per task [n_t, D]) and fallback examples [F, D].

    Each fold leaves out a fifth of every task's examples and of the fallback examples, rebuilds
    the prototypes and the calibration without them, and scores what it left out, so no example is
    scored against a prototype it helped build. With both kinds, the threshold maximises balanced
    accuracy with in-scope accuracy weighted _IN_SCOPE_WEIGHT to 1 against fallback recall (the
    operator's counts of each say nothing about real traffic); with examples only, it stays at
    `default` unless that would drop more than 5% of them; with fallback examples only, it rises
    from `default` until it catches 70%.
    """
    n_examples = sum(len(e) for e in examples)
    if n_examples == 0 and len(fallback) == 0:
        return Fit(default, None, None, 0, 0)
    folds = max(2, min(_FOLDS, max([len(e) for e in examples] + [len(fallback)])))
    in_values, in_correct, out_values = [], [], []
    desc = torch.from_numpy(descriptions.astype(np.float32))
    for fold in range(folds):
        kept = [torch.from_numpy(e[np.arange(len(e)) % folds != fold].astype(np.float32)) for e in examples]
        protos = mix_prototypes(desc, kept, description_weight).numpy()
        cal = calibrate(protos, background)
        for task, task_examples in enumerate(examples):
            held = task_examples[np.arange(len(task_examples)) % folds == fold]
            if len(held):
                index, value = decide_batch(held @ protos.T, criterion, cal)
                in_values.append(value)
                in_correct.append(index == task)
        held_fb = fallback[np.arange(len(fallback)) % folds == fold]
        if len(held_fb):
            out_values.append(decide_batch(held_fb @ protos.T, criterion, cal)[1])
    pos = np.concatenate(in_values) if in_values else np.zeros(0)
    right = np.concatenate(in_correct) if in_correct else np.zeros(0, bool)
    neg = np.concatenate(out_values) if out_values else np.zeros(0)
    if len(pos) and len(neg):
        threshold = _balanced_best(pos, right, neg)
    elif len(pos):
        threshold = min(default, float(np.quantile(pos, 1 - _KEEP_EXAMPLES)))
    else:
        threshold = max(default, float(np.quantile(neg, _CATCH_FALLBACK)))
    precision = recall = None
    if len(neg):
        said_in = (pos < threshold).sum()
        said_out = (neg < threshold).sum()
        recall = float(said_out / len(neg))
        precision = float(said_out / (said_out + said_in)) if said_out + said_in else 0.0
    return Fit(float(threshold), precision, recall, n_examples, len(fallback))


def _balanced_best(pos: np.ndarray, right: np.ndarray, neg: np.ndarray) -> float:
    """The threshold (a midpoint between neighbouring values) maximising weighted balanced
    accuracy; among equals, the middle of the best run, as far from both kinds as the data allows."""
    values = np.unique(np.concatenate([pos, neg]))
    candidates = np.concatenate([[values[0] - 1e-3], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-3]])
    in_acc = ((pos[None, :] >= candidates[:, None]) & right[None, :]).mean(axis=1)
    out_acc = (neg[None, :] < candidates[:, None]).mean(axis=1)
    score = (_IN_SCOPE_WEIGHT * in_acc + out_acc) / (_IN_SCOPE_WEIGHT + 1)
    best = np.flatnonzero(score >= score.max() - 1e-9)
    return float(candidates[best[len(best) // 2]])
