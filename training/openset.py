"""Open-world evaluation: how routing decisions hold on traffic a router will really see.

For each held-out set it scores, at once: in-scope accuracy, accuracy with fallback as a class
(in-scope rows must get their task, fallback rows must fall back), fallback precision, recall and
AUROC, for each no-match criterion (models/nomatch.py) at the checkpoint's shipped threshold and at
a per-router threshold fitted from the router's own examples and fallback examples, with the
descriptions alone and with `shots` examples per task. The traffic: the set's own fallback rows
(banking77_oos) or out-of-domain prompts of unrelated families mixed in (training/families.py),
optionally behind an agent's long system prompt.

    python -m training.cli openset --checkpoint models/checkpoints/default --sets hwu64 sgd_travel

Embeddings of each distinct conversation are computed once per run and reused across criteria,
shots and thresholds, so a table over 25 sets costs one pass over their prompts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from transformers import PreTrainedTokenizerBase

from models import ChatMessage, TaskClassifier, TaskVectors
from models.nomatch import (
    CRITERIA,
    Calibration,
    Fit,
    background_prompts,
    calibrate,
    decide_batch,
    fit_threshold,
)
from training.data import FALLBACK, Taxonomy, ensure_val_split, load_taxonomies
from training.encode import as_user, embed
from training.evaluate import task_examples
from training.families import FAMILIES, OOD_DONORS, family_of, with_ood_fallback, with_preamble


class Embedder:
    """Unit-norm embeddings of conversations, each distinct one computed once."""

    def __init__(self, model: TaskClassifier, tokenizer: PreTrainedTokenizerBase, context: str) -> None:
        self.model, self.tokenizer, self.context = model, tokenizer, context
        self._cache: dict[str, np.ndarray] = {}

    @staticmethod
    def _key(conversation: Sequence[ChatMessage]) -> str:
        return json.dumps([(m.role, m.content) for m in conversation])

    def __call__(self, conversations: Sequence[Sequence[ChatMessage]], side: str = "prompt") -> np.ndarray:
        keys = [side + self._key(c) for c in conversations]
        missing = {k: c for k, c in zip(keys, conversations, strict=True) if k not in self._cache}
        if missing:
            vectors = embed(
                self.model, self.tokenizer, list(missing.values()), side=side, context=self.context
            )
            for key, vector in zip(missing, vectors.float().cpu().numpy(), strict=True):
                self._cache[key] = vector
        if not keys:
            return np.zeros((0, self.model.dim), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])

    def texts(self, texts: Sequence[str], side: str = "task") -> np.ndarray:
        return self(as_user(texts), side=side)


@dataclass
class RouterView:
    """One taxonomy as a router sees it: prototypes, per-example embeddings, background calibration."""

    tasks: list[str]
    prototypes: np.ndarray  # [T, D]
    vectors: TaskVectors  # the prototypes plus the checkpoint's learned examples: what is scored
    calibration: Calibration
    examples: list[np.ndarray]  # per task [n_t, D] (may be empty)
    descriptions: np.ndarray  # [T, D]


def router_view(
    embedder: Embedder,
    taxonomy: Taxonomy,
    background: np.ndarray,
    shots: int,
    seed: int = 0,
) -> RouterView:
    """Prototypes as the server builds them, with `shots` train prompts per task standing in for
    the examples an operator would write."""
    texts = [t.description for t in taxonomy.tasks]
    learned = embedder.model.describe(texts, torch.from_numpy(embedder.texts(texts)))
    descriptions = learned.numpy()
    examples = [
        embedder.texts(chosen) if chosen else np.zeros((0, descriptions.shape[1]), np.float32)
        for chosen in task_examples(taxonomy, shots, seed)
    ]
    rows = [torch.from_numpy(e) if len(e) else None for e in examples]
    vectors = embedder.model.task_vectors(texts, torch.from_numpy(descriptions), rows)
    return RouterView(
        taxonomy.task_names,
        vectors.prototypes.numpy(),
        vectors,
        calibrate(vectors, background),
        examples,
        descriptions,
    )


def open_metrics(
    sims: np.ndarray,
    labels: Sequence[str],
    tasks: Sequence[str],
    criterion: str,
    cal: Calibration,
    threshold: float,
) -> dict[str, float]:
    """Accuracy with fallback as a class, in-scope accuracy (closed and with fallback), fallback
    precision/recall/AUROC for one criterion at one threshold."""
    index, value = decide_batch(sims, criterion, cal)
    truth = np.array(labels)
    is_fb = truth == FALLBACK
    predicted = np.where(value >= threshold, np.array(tasks)[index], FALLBACK)
    closed = np.array(tasks)[sims.argmax(axis=1)]
    out: dict[str, float] = {
        "accuracy": float((predicted == truth).mean()),
        "closed_accuracy": float((closed[~is_fb] == truth[~is_fb]).mean())
        if (~is_fb).any()
        else float("nan"),
        "in_scope_accuracy": float((predicted[~is_fb] == truth[~is_fb]).mean())
        if (~is_fb).any()
        else float("nan"),
    }
    if is_fb.any():
        said = predicted == FALLBACK
        out["fallback_recall"] = float(said[is_fb].mean())
        out["fallback_precision"] = float(is_fb[said].mean()) if said.any() else 0.0
        out["fallback_auroc"] = float(roc_auc_score(is_fb, -value)) if (~is_fb).any() else float("nan")
    return out


# The routing bar per set (issue 14): fallback recall at least this while in-scope accuracy loses at
# most BAR_LOSS against the closed-set accuracy.
BAR_RECALL = 0.85
BAR_LOSS = 0.03


def bar_range(
    sims: np.ndarray, labels: Sequence[str], tasks: Sequence[str], criterion: str, cal: Calibration
) -> tuple[float, float] | None:
    """The thresholds at which these rows meet the routing bar (lowest, highest), or None when no
    threshold does. On test rows it is an oracle, not a choice: it says whether the bar is out of
    reach of *any* threshold on this criterion, i.e. whether what is missing is the threshold's
    transfer or the encoder's separation of in-scope from fallback prompts."""
    index, value = decide_batch(sims, criterion, cal)
    truth = np.array(labels)
    is_fb = truth == FALLBACK
    if not is_fb.any() or is_fb.all():
        return None
    correct = (np.array(tasks)[index] == truth)[~is_fb]
    in_value, fb_value = value[~is_fb], value[is_fb]
    # Only the observed values change a decision; a threshold just above each is the candidate.
    candidates = np.unique(np.concatenate([value, [value.min() - 1.0]])) + 1e-6
    closed = correct.mean()
    recall = (fb_value[None, :] < candidates[:, None]).mean(axis=1)
    kept = ((in_value[None, :] >= candidates[:, None]) & correct[None, :]).mean(axis=1)
    ok = (recall >= BAR_RECALL) & (closed - kept <= BAR_LOSS + 1e-9)
    if not ok.any():
        return None
    return float(candidates[ok].min()), float(candidates[ok].max())


@dataclass
class SetScores:
    """Everything needed to score one set at any threshold: similarities of its test rows."""

    name: str
    view: RouterView
    sims: np.ndarray
    labels: list[str]


def score_set(
    embedder: Embedder,
    taxonomy: Taxonomy,
    background: np.ndarray,
    split: str,
    shots: int,
    limit: int | None,
    seed: int = 0,
) -> SetScores:
    rows = taxonomy.rows(split)
    if limit is not None and len(rows) > limit:
        rows = random.Random(seed).sample(rows, limit)
    view = router_view(embedder, taxonomy, background, shots, seed)
    prompts = embedder([r.messages for r in rows])
    return SetScores(taxonomy.name, view, view.vectors.similarity_np(prompts), [r.label for r in rows])


def open_taxonomy(name: str, split_share: float = 0.5, seed: int = 0) -> tuple[Taxonomy, bool]:
    """(the set with out-of-domain fallback rows in val and test, whether it had its own fallback rows)."""
    target = ensure_val_split(load_taxonomies([name])[0])
    if any(e.label == FALLBACK for e in target.examples):
        return target, True
    if Path(name).name not in {m for members in FAMILIES.values() for m in members}:
        return target, False  # a set of the user's own: no family, so no donors to draw from
    donors = [ensure_val_split(d) for d in load_taxonomies(OOD_DONORS[family_of(name)])]
    mixed = target
    for split in ("val", "test"):
        part = with_ood_fallback(target, donors, split, split_share, seed)
        mixed = Taxonomy(
            target.name, target.tasks, [e for e in mixed.examples if e.split != split] + part.rows(split)
        )
    return mixed, False


def fitted_threshold(
    embedder: Embedder,
    taxonomy: Taxonomy,
    view: RouterView,
    background: np.ndarray,
    criterion: str,
    default: float,
    fallback_examples: int = 20,
    seed: int = 0,
    split: str = "test",
) -> Fit:
    """What the server fits for a router carrying the view's examples plus `fallback_examples`
    fallback prompts, drawn (seeded) from the set's val fallback rows (train's when val is what is
    scored, so that no scored row is one the fit saw)."""
    rng = random.Random(seed)
    source = "train" if split == "val" else "val"
    pool = [e.text for e in taxonomy.rows(source) if e.label == FALLBACK]
    chosen = rng.sample(pool, min(fallback_examples, len(pool)))
    negatives = (
        embedder.texts(chosen, side="prompt")
        if chosen
        else np.zeros((0, view.prototypes.shape[1]), np.float32)
    )
    return fit_threshold(
        view.descriptions,
        view.examples,
        negatives,
        background,
        criterion,
        default,
        embedder.model.config.description_weight,
        learned=view.vectors,
    )


def pick_shared_threshold(val: Iterable[SetScores], criterion: str, in_scope_weight: float = 3.0) -> float:
    """One threshold for all the given sets' val rows (descriptions only and with examples alike):
    the one maximising the mean over sets of (w x in-scope accuracy + fallback recall) / (w + 1), the
    weighting per-router fitting uses (models/nomatch.py); sets without fallback rows count in-scope."""
    val = list(val)
    values = [decide_batch(s.sims, criterion, s.view.calibration)[1] for s in val]
    grid = np.quantile(np.concatenate(values), np.linspace(0.005, 0.995, 199))

    def objective(t: float) -> float:
        scores = []
        for s in val:
            m = open_metrics(s.sims, s.labels, s.view.tasks, criterion, s.view.calibration, t)
            recall = m.get("fallback_recall", m["in_scope_accuracy"])
            scores.append((in_scope_weight * m["in_scope_accuracy"] + recall) / (in_scope_weight + 1))
        return float(np.mean(scores))

    return float(max(grid, key=objective))


def decisions(
    model: TaskClassifier,
    tokenizer: PreTrainedTokenizerBase,
    taxonomy: Taxonomy,
    split: str,
    shots: int = 0,
    limit: int | None = None,
    criteria: Sequence[str] = CRITERIA,
) -> dict[str, dict[str, float]]:
    """What a router built from `taxonomy` does, as served: for each no-match criterion, at the
    checkpoint's default threshold and at the threshold fitted from the router's examples (the
    `shots`) and 20 val fallback rows (when the set has any): accuracy with fallback as a class,
    in-scope accuracy, fallback precision / recall / AUROC."""
    embedder = Embedder(model, tokenizer, model.config.context)
    background = embedder.texts(background_prompts(), side="prompt")
    scored = score_set(embedder, taxonomy, background, split, shots, limit)
    out: dict[str, dict[str, float]] = {}
    for criterion in criteria:
        default = model.config.default_threshold(criterion, shots > 0)
        fit = fitted_threshold(embedder, taxonomy, scored.view, background, criterion, default, split=split)
        for how, t in (("default", default), ("fitted", fit.threshold)):
            m = open_metrics(
                scored.sims, scored.labels, scored.view.tasks, criterion, scored.view.calibration, t
            )
            # NaN (e.g. in-scope accuracy of a set with no in-scope rows) becomes None: valid JSON.
            values = {k: (round(v, 4) if v == v else None) for k, v in m.items()}
            out[f"{criterion}@{how}"] = {"threshold": round(t, 4), **values}
    return out


def run(
    model: TaskClassifier,
    tokenizer: PreTrainedTokenizerBase,
    background_texts: Sequence[str],
    sets: Sequence[str],
    context: str | None = None,
    shots: Sequence[int] = (0, 5),
    limit: int | None = 1000,
    preamble: str | None = None,
    criteria: Sequence[str] = CRITERIA,
) -> dict[str, Any]:
    """The whole protocol on `sets` (each scored as a router of its own tasks, test split):

    - `shipped`: each criterion at the checkpoint's default threshold;
    - `selected`: at the one threshold per criterion chosen on the sets' *val* rows, with and without
      examples together (`pick_shared_threshold`; how a shipped default is chosen: on held-out sets,
      never on the training sets' validation);
    - `fitted`: at each router's own threshold, fitted from its examples (the `shots`) and 20
      fallback examples drawn from val (models/nomatch.fit_threshold), shipped default otherwise.
    """
    config = model.config
    embedder = Embedder(model, tokenizer, context or config.context)
    background = embedder.texts(background_texts, side="prompt")
    val: dict[tuple[str, int], SetScores] = {}
    test: dict[tuple[str, int], SetScores] = {}
    taxonomies: dict[str, Taxonomy] = {}
    for name in sets:
        taxonomy, _ = open_taxonomy(name)
        if preamble is not None:
            taxonomy = with_preamble(taxonomy, preamble)
        taxonomies[name] = taxonomy
        for n in shots:
            val[name, n] = score_set(embedder, taxonomy, background, "val", n, limit // 2 if limit else None)
            test[name, n] = score_set(embedder, taxonomy, background, "test", n, limit)
    out: dict[str, Any] = {
        "context": embedder.context,
        "sets": list(sets),
        "rows": {},
        "thresholds": {},
        "thresholds_by_shots": {},
    }
    for criterion in criteria:
        selected = pick_shared_threshold([val[name, n] for name in sets for n in shots], criterion)
        out["thresholds"][criterion] = selected
        # The same choice made separately for routers without and with examples.
        by_shots = {n: pick_shared_threshold([val[name, n] for name in sets], criterion) for n in shots}
        out["thresholds_by_shots"][criterion] = {str(n): t for n, t in by_shots.items()}
        for n in shots:
            for name in sets:
                scored = test[name, n]
                fit = fitted_threshold(
                    embedder,
                    taxonomies[name],
                    scored.view,
                    background,
                    criterion,
                    config.default_threshold(criterion, n > 0),
                )
                row = {}
                for how, t in (
                    ("shipped", config.default_threshold(criterion, n > 0)),
                    ("selected", selected),
                    ("per_kind", by_shots[n]),
                    ("fitted", fit.threshold),
                ):
                    metrics = open_metrics(
                        scored.sims, scored.labels, scored.view.tasks, criterion, scored.view.calibration, t
                    )
                    row[how] = metrics | {"threshold": t}
                reach = bar_range(
                    scored.sims, scored.labels, scored.view.tasks, criterion, scored.view.calibration
                )
                row["bar_reachable"] = None if reach is None else {"low": reach[0], "high": reach[1]}
                row["fitted"]["expected_precision"] = fit.fallback_precision
                row["fitted"]["expected_recall"] = fit.fallback_recall
                out["rows"][f"{name}|{n}|{criterion}"] = row
    return out


def bar_summary(result: dict[str, Any], how: str, shots: int, criterion: str) -> str:
    """Against the routing bar: mean fallback recall and in-scope loss (closed-set minus in-scope
    accuracy), and how many sets reach recall >= 0.85 with a loss of at most 3 points."""
    picked = [v[how] for k, v in result["rows"].items() if k.endswith(f"|{shots}|{criterion}")]
    with_fb = [m for m in picked if "fallback_recall" in m]
    if not with_fb:
        return f"{criterion}, {how}, {shots} ex.: no fallback rows"
    recall = float(np.mean([m["fallback_recall"] for m in with_fb]))
    loss = float(np.mean([m["closed_accuracy"] - m["in_scope_accuracy"] for m in with_fb]))
    meet = sum(
        m["fallback_recall"] >= BAR_RECALL and m["closed_accuracy"] - m["in_scope_accuracy"] <= BAR_LOSS
        for m in with_fb
    )
    rows = [v for k, v in result["rows"].items() if k.endswith(f"|{shots}|{criterion}") and how in v]
    reachable = sum(1 for v in rows if v.get("bar_reachable"))
    return (
        f"{criterion}, {how}, {shots} ex.: fallback recall {recall:.3f}, in-scope loss "
        f"{100 * loss:.1f} points, {meet}/{len(with_fb)} sets with recall >= {BAR_RECALL} and loss <= "
        f"{100 * BAR_LOSS:.0f} points (at some threshold, test rows: {reachable}/{len(with_fb)})"
    )


def table(result: dict[str, Any], how: str, shots: int, criterion: str) -> str:
    """A markdown table: one line per set, the user-facing numbers at one kind of threshold."""
    lines = [
        f"{criterion}, {how} threshold, {shots} examples per task",
        "| set | closed-set acc. | in-scope acc. | acc. with fallback | fallback P / R | AUROC | threshold "
        "| bar reachable at |",
        "|---|---|---|---|---|---|---|---|",
    ]
    picked = [
        (k.split("|")[0], v[how], v.get("bar_reachable"))
        for k, v in result["rows"].items()
        if k.endswith(f"|{shots}|{criterion}")
    ]
    nan = float("nan")
    for name, m, reach in picked:
        where = f"{reach['low']:.2f} to {reach['high']:.2f}" if reach else "no threshold"
        lines.append(
            f"| {name} | {m['closed_accuracy']:.3f} | {m['in_scope_accuracy']:.3f} | {m['accuracy']:.3f} | "
            f"{m.get('fallback_precision', nan):.2f} / {m.get('fallback_recall', nan):.2f} | "
            f"{m.get('fallback_auroc', nan):.3f} | {m['threshold']:.3f} | {where} |"
        )
    if picked:
        keys = ("closed_accuracy", "in_scope_accuracy", "accuracy", "fallback_recall", "fallback_auroc")
        mean = {k: np.nanmean([m.get(k, np.nan) for _, m, _ in picked]) for k in keys}
        lines.append(
            f"| **mean** | {mean['closed_accuracy']:.3f} | {mean['in_scope_accuracy']:.3f} | "
            f"{mean['accuracy']:.3f} | - / {mean['fallback_recall']:.2f} | {mean['fallback_auroc']:.3f} | | |"
        )
    return "\n".join(lines)
