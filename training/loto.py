"""Leave-one-taxonomy-out: for each public set, train on the others and evaluate zero-shot on it.

    python -m training.cli loto --out runs/loto [--holdout hwu64 snips] [--max-steps 1500]

For each held-out set it trains the MoE classifier and the no-experts ablation (one always-on
adapter with the same active size) on every other set plus the project's LLM task-type prompts,
then reports closed-set test accuracy of: the plain encoder (descriptions only), the ablation, the
MoE classifier, the plain encoder's prototype of description + 5 examples, and the MoE + 5 examples.
banking77 and banking77_oos share their prompts, so they are held out together.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models import PLAIN_CHECKPOINT, load_checkpoint
from models.checkpoint import save_difference
from models.nomatch import CALIBRATED
from training.data import load_taxonomies
from training.evaluate import score_shots
from training.openset import decisions, open_taxonomy
from training.train import TrainConfig, train

PUBLIC = ("banking77", "hwu64", "snips", "mmlu", "p3_task_types")
SAME_PROMPTS = {"banking77": ("banking77", "banking77_oos")}
ALWAYS = ("llm_task_types",)


def run(
    cfg: TrainConfig,
    out: Path,
    holdouts: tuple[str, ...] = PUBLIC,
    shots: int = 5,
    pool: tuple[str, ...] = PUBLIC,
    always: tuple[str, ...] = ALWAYS,
    plain_checkpoint: Path = PLAIN_CHECKPOINT,
    test_limit: int | None = None,
) -> dict[str, Any]:
    """Train on `pool` minus each held-out set (plus `always`), evaluate on the held-out test split."""
    out.mkdir(parents=True, exist_ok=True)
    plain, plain_tok, _ = load_checkpoint(plain_checkpoint)
    results: dict[str, Any] = {}
    for held in holdouts:
        excluded = SAME_PROMPTS.get(held, (held,))
        sets = load_taxonomies([*(n for n in pool if n not in excluded), *always])
        target = load_taxonomies([held])[0]
        if not target.rows("test", with_fallback=False):
            raise ValueError(f"held-out set {held!r} has no in-scope test rows")
        row: dict[str, Any] = {"trained_on": [s.name for s in sets], "test_limit": test_limit}
        zero, few = score_shots(plain, plain_tok, target, "test", (0, shots), test_limit)
        row["plain"], row["plain+5"] = zero.closed_accuracy(), few.closed_accuracy()
        # The routing decision as served, with fallback rows (its own, or out-of-domain ones).
        open_target, _ = open_taxonomy(held)
        row["plain_decisions"] = decisions(
            plain, plain_tok, open_target, "test", 0, test_limit, (CALIBRATED,)
        )
        for name, variant in (("dense", replace(cfg, dense_adapter=True)), ("moe", cfg)):
            model, tokenizer, summary = train(variant, sets)
            save_difference(model, out / f"{Path(held).name}-{name}", {"summary": summary})
            zero, few = score_shots(model, tokenizer, target, "test", (0, shots), test_limit)
            row[name], row[f"{name}+5"] = zero.closed_accuracy(), few.closed_accuracy()
            row[f"{name}_decisions"] = decisions(
                model, tokenizer, open_target, "test", 0, test_limit, (CALIBRATED,)
            )
            row[f"{name}_best_step"] = summary["best_step"]
            row[f"{name}_seconds"] = summary["seconds"]
        results[Path(held).name] = row
        (out / "loto.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "loto.md").write_text(table(results) + "\n\n" + decision_table(results) + "\n")
        print(table(results), decision_table(results), sep="\n\n", flush=True)
    return results


def decision_table(results: dict[str, Any]) -> str:
    """Accuracy with fallback as a class (calibrated criterion), at each model's default threshold
    and at the per-router fitted one."""
    lines = [
        "| held-out set | plain: default / fitted | ablation: default / fitted | MoE: default / fitted |",
        "|---|---|---|---|",
    ]
    for held, row in results.items():
        cells = []
        for name in ("plain", "dense", "moe"):
            d = row.get(f"{name}_decisions", {})
            default, fitted = d.get("calibrated@default"), d.get("calibrated@fitted")
            both = default and fitted
            cells.append(f"{default['accuracy']:.3f} / {fitted['accuracy']:.3f}" if both else "-")
        lines.append(f"| {held} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    columns = ["plain", "dense", "moe", "plain+5", "dense+5", "moe+5"]
    lines = [
        "| held-out set | plain encoder | no-experts ablation | MoE | plain + 5 ex."
        " | ablation + 5 ex. | MoE + 5 ex. |",
        "|---|---|---|---|---|---|---|",
    ]
    for held, row in results.items():
        lines.append(
            f"| {held} | " + " | ".join(f"{row[c]:.3f}" if c in row else "-" for c in columns) + " |"
        )
    if results:
        means = [np.mean([r[c] for r in results.values() if c in r]) for c in columns]
        lines.append("| **mean** | " + " | ".join(f"**{m:.3f}**" for m in means) + " |")
    return "\n".join(lines)
