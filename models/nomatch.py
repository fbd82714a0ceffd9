"""The no-match decision: when does a prompt fit none of a router's tasks?

A raw cosine threshold means something different on every task set: descriptions written in one
style sit at 0.3 from everything, in another at 0.1; examples (which read like prompts) lift every
similarity; many tasks give random prompts more chances of a close match than few. So the decision
compares a prompt's best similarity with the best similarity *unrelated* prompts find in the same
router:

- `calibrated` (the shipped default): a background corpus of everyday prompts of every kind
  (models/calibration/background_prompts.txt, embedded once at load) is scored against the router's
  prototypes when it is compiled; each background prompt's best similarity gives a distribution,
  and a prompt's value is (best similarity - its mean) / its std. "0.9" reads the same on any
  router: the prompt's best match is 0.9 standard deviations above what random traffic finds there,
  whatever the descriptions' style or the number of tasks. Against examples, in-scope prompts stand
  further above random traffic than against bare descriptions, so a checkpoint may set a higher
  default for routers with examples (`calibrated_threshold_examples`). Within one router it is a
  monotone function of the best similarity, so it ranks prompts exactly as the raw cosine does.
- `similarity`: the best raw cosine, as before, for checkpoints and routers that set it.

Measured against the alternatives (training/README.md): a z-score per task (each task against its own
background distribution) ranked in-domain out-of-scope prompts worse (fallback AUROC 0.63 vs 0.75 on
banking77_oos) and lost more in-scope prompts at the same recall; per-prompt hubness corrections and
CSLS did not beat this.

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

from models.tasks import TaskVectors

BACKGROUND_FILE = Path(__file__).resolve().parent / "calibration" / "background_prompts.txt"
SIMILARITY = "similarity"
CALIBRATED = "calibrated"
CRITERIA = (CALIBRATED, SIMILARITY)
# A router whose background similarities barely vary must not turn every small difference into a
# huge value.
_MIN_STD = 0.02
# Folds of the per-router cross-validation; fewer when tasks have fewer examples.
_FOLDS = 5
# With examples but no fallback examples, the fitted threshold keeps this share of them matched.
_KEEP_EXAMPLES = 0.95
# With fallback examples but no examples, it rises until this share of them falls back: without
# in-scope examples the cost of rising cannot be measured, so it stops short of catching them all.
_CATCH_FALLBACK = 0.7
# With both kinds, a lost in-scope example weighs this many missed fallback examples. Measured on
# held-out sets (training/README.md), 5 examples per task and 20 fallback examples: equal weights
# caught 95% of out-of-domain prompts for 2.7 points of in-scope accuracy; 3:1 caught 93% for 1.7.
_IN_SCOPE_WEIGHT = 3.0


def background_prompts(path: Path = BACKGROUND_FILE) -> list[str]:
    """The background corpus: one prompt per line (blank lines and '#' comments skipped)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@dataclass(frozen=True)
class Calibration:
    """How well unrelated prompts match a router: the background corpus's best similarities."""

    mean: float
    std: float

    def similarity_cut(self, threshold: float) -> float:
        """The `calibrated` threshold in similarity units: where a best match stops matching."""
        return self.mean + threshold * self.std


def calibrate(prototypes: np.ndarray | TaskVectors, background: np.ndarray) -> Calibration:
    """Background statistics for prototypes [T, D] (or a router's TaskVectors, scored the way its
    prompts are) from background embeddings [B, D]."""
    if isinstance(prototypes, TaskVectors):
        best = prototypes.similarity_np(background).max(axis=1)
    else:
        best = (background.astype(np.float32) @ prototypes.astype(np.float32).T).max(axis=1)
    return Calibration(float(best.mean()), max(float(best.std()), _MIN_STD))


def criterion_value(
    similarities: np.ndarray, index: np.ndarray, criterion: str, cal: Calibration
) -> np.ndarray:
    """The criterion's value [N] for the task `index` [N] chosen in each row of similarities [N, T]."""
    best = np.take_along_axis(similarities, index[:, None], axis=1)[:, 0]
    if criterion == SIMILARITY:
        return best
    if criterion == CALIBRATED:
        return (best - cal.mean) / cal.std
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
    fixed: float | None = None,
    learned: TaskVectors | None = None,
) -> Fit:
    """Fit a router's threshold from its examples (per task [n_t, D]) and/or fallback examples [F, D];
    with `fixed` (a threshold the router sets), only measure what cross-validation expects of it.

    Each fold leaves out a fifth of every task's examples and of the fallback examples, rebuilds
    the prototypes and the calibration without them, and scores what it left out, so no example is
    scored against a prototype it helped build. With both kinds, the threshold maximises balanced
    accuracy with in-scope accuracy weighted _IN_SCOPE_WEIGHT to 1 against fallback recall (the
    operator's counts of each say nothing about real traffic); with examples only, it stays at
    `default` unless that would drop more than 5% of them; with fallback examples only, it rises
    from `default` until it catches 70%. `learned`: the router's learned examples (a retrained
    checkpoint's; its prototypes are ignored), scored with every fold's prototypes as served.
    """
    n_examples = sum(len(e) for e in examples)
    if n_examples == 0 and len(fallback) == 0:
        return Fit(default, None, None, 0, 0)
    folds = max(2, min(_FOLDS, max([len(e) for e in examples] + [len(fallback)])))
    in_values, in_correct, out_values = [], [], []
    desc = torch.from_numpy(descriptions.astype(np.float32))
    for fold in range(folds):
        kept = [torch.from_numpy(e[np.arange(len(e)) % folds != fold].astype(np.float32)) for e in examples]
        protos = mix_prototypes(desc, kept, description_weight)
        vectors = TaskVectors(protos)
        if learned is not None and learned.neighbours is not None:
            vectors = TaskVectors(protos, learned.neighbours, learned.owner, learned.weight)
        cal = calibrate(vectors, background)
        for task, task_examples in enumerate(examples):
            held = task_examples[np.arange(len(task_examples)) % folds == fold]
            if len(held):
                index, value = decide_batch(vectors.similarity_np(held), criterion, cal)
                in_values.append(value)
                in_correct.append(index == task)
        held_fb = fallback[np.arange(len(fallback)) % folds == fold]
        if len(held_fb):
            out_values.append(decide_batch(vectors.similarity_np(held_fb), criterion, cal)[1])
    pos = np.concatenate(in_values) if in_values else np.zeros(0)
    right = np.concatenate(in_correct) if in_correct else np.zeros(0, bool)
    neg = np.concatenate(out_values) if out_values else np.zeros(0)
    if fixed is not None:
        threshold = fixed
    elif len(pos) and len(neg):
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
        precision = float(said_out / (said_out + said_in)) if said_out + said_in else None
    return Fit(float(threshold), precision, recall, n_examples, len(fallback))


def _balanced_best(pos: np.ndarray, right: np.ndarray, neg: np.ndarray) -> float:
    """The threshold (a midpoint between neighbouring values) maximising weighted balanced
    accuracy; among equals, the lowest: real in-scope traffic is more varied than the examples an
    operator writes, so the threshold sits just above what must fall back (on held-out sets this
    lost 1.7 points of in-scope accuracy where the middle of the run lost 1.9, for the same recall)."""
    values = np.unique(np.concatenate([pos, neg]))
    candidates = np.concatenate([[values[0] - 1e-3], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-3]])
    # Sorted counts instead of a [candidates x values] comparison: a router may carry 16k examples.
    kept = np.sort(pos[right])
    in_acc = (len(kept) - np.searchsorted(kept, candidates, side="left")) / len(pos)
    out_acc = np.searchsorted(np.sort(neg), candidates, side="left") / len(neg)
    score = (_IN_SCOPE_WEIGHT * in_acc + out_acc) / (_IN_SCOPE_WEIGHT + 1)
    best = np.flatnonzero(score >= score.max() - 1e-9)
    return float(candidates[best[0]])
