"""Leave-one-family-out (LOFO): for each family of sibling sets, train on the other families and
score zero-shot on every set of the held-out family.

    python -m training.cli lofo --out ~/.cache/taskrouter/lofo [--families banking support]
        [--variants plain moe dense] [--max-steps 400] [--test-limit 1000]

Holding out one set while its siblings train (three banking sets, three SGD groups) flatters; a
family fold is what a truly new taxonomy looks like. Per fold and variant the run is resumable
(`runs/<fold>-<variant>/resume.pt`), and finished folds are skipped, so the command can stop and
continue later; two processes may run different `--variants` into the same `--out` at once (each
writes only its own `<variant>.json`; the tables are rebuilt from whatever is there).

Model selection transfers only if it is made on held-out families: each fold's training history
records the held-out family's *validation* accuracy at every evaluation, and `selection_table` picks
the one step count that is best on average over the folds; test rows are never used to choose.
Sets whose licence forbids training shipped weights never train here either, so the folds measure
the model that can ship.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from models import PLAIN_CHECKPOINT, TaskClassifier, load_checkpoint
from models.checkpoint import save_difference
from models.nomatch import CALIBRATED
from training.data import ensure_val_split, load_taxonomies
from training.evaluate import score_shots
from training.families import FAMILIES, NOT_FOR_WEIGHTS

__all__ = ["FAMILIES", "run", "tables", "training_pool"]
from training.openset import decisions, open_taxonomy
from training.train import TrainConfig, train

# banking77_oos holds banking77's prompts under fewer intents: training on both repeats them.
REPEATS = ("banking77_oos",)
VARIANTS = ("plain", "moe", "dense", "open")
# The "open" variant: the MoE trained with the open-set term (TrainConfig.open_set) at this weight
# unless the command sets another.
OPEN_SET_WEIGHT = 1.0


def training_pool(
    held_out: tuple[str, ...] = (), families: dict[str, tuple[str, ...]] = FAMILIES
) -> list[str]:
    """Every set of the families not held out that may train shipped weights."""
    return [
        s
        for family, members in families.items()
        if family not in held_out
        for s in members
        if s not in NOT_FOR_WEIGHTS and s not in REPEATS
    ]


def held_out_scores(
    model: TaskClassifier, tokenizer: PreTrainedTokenizerBase, name: str, shots: int, test_limit: int | None
) -> dict[str, Any]:
    """Closed-set test accuracy zero-shot and with `shots` examples per task, and the routing
    decision as served (calibrated criterion, default and fitted threshold, fallback rows mixed in)."""
    target = load_taxonomies([name])[0]
    zero, few = score_shots(model, tokenizer, target, "test", (0, shots), test_limit)
    open_target, _ = open_taxonomy(name)
    return {
        "zero": zero.closed_accuracy(),
        "shots": few.closed_accuracy(),
        "decisions": decisions(model, tokenizer, open_target, "test", 0, test_limit, (CALIBRATED,)),
    }


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write(path: Path, value: Any) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(value if isinstance(value, str) else json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


def run(
    cfg: TrainConfig,
    out: Path,
    folds: tuple[str, ...] = tuple(FAMILIES),
    variants: tuple[str, ...] = VARIANTS,
    shots: int = 5,
    test_limit: int | None = 1000,
    families: dict[str, tuple[str, ...]] = FAMILIES,
    plain_checkpoint: Path = PLAIN_CHECKPOINT,
) -> dict[str, dict[str, Any]]:
    """Run the folds not yet in `out` for each variant; returns {variant: {fold: result}}."""
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; allowed: {', '.join(VARIANTS)}")
    results = {v: _read(out / f"{v}.json") for v in variants}
    for fold in folds:
        held = families[fold]
        pool = training_pool((fold,), families)
        for variant in variants:
            if fold in results[variant]:
                continue
            if variant == "plain":
                model, tokenizer, _ = load_checkpoint(plain_checkpoint)
                row: dict[str, Any] = {}
            else:
                open_set = (cfg.open_set or OPEN_SET_WEIGHT) if variant == "open" else 0.0
                variant_cfg = replace(
                    cfg, dense_adapter=variant == "dense", open_set=open_set, keep_best=False
                )
                run_dir = out / "runs" / f"{fold}-{variant}"
                model, tokenizer, summary = train(
                    variant_cfg, load_taxonomies(pool), load_taxonomies(held), run_dir=run_dir
                )
                if not summary["finished"]:
                    print(f"{fold}-{variant}: stopped at step {summary['steps']}; run again to continue")
                    return results
                save_difference(model, run_dir / "final", {"summary": summary})
                row = {
                    "trained_on": pool,
                    "history": summary["history"],
                    "steps_per_second": summary["steps_per_second"],
                    "prompts_per_second": summary["prompts_per_second"],
                }
            row["sets"] = {
                Path(s).name: held_out_scores(model, tokenizer, s, shots, test_limit) for s in held
            }
            results[variant][fold] = row
            _write(out / f"{variant}.json", results[variant])
            report = tables(out, shots)
            _write(out / "lofo.md", report + "\n")
            print(report, flush=True)
    return results


def _all_results(out: Path) -> dict[str, dict[str, Any]]:
    """Every variant with results in `out`: plain, moe, dense and interpolated ones (`moe@0.5`)."""
    found = {p.stem for p in out.glob("*.json")}
    names = [v for v in VARIANTS if v in found] + sorted(found - set(VARIANTS))
    return {v: _read(out / f"{v}.json") for v in names}


def _label(variant: str) -> str:
    base, _, alpha = variant.partition("@")
    name = {
        "plain": "plain encoder",
        "moe": "MoE",
        "dense": "no-experts ablation",
        "open": "MoE + open-set term",
    }.get(base, base)
    return f"{name} x{alpha}" if alpha else name


def interpolate(
    out: Path,
    alphas: tuple[float, ...],
    variants: tuple[str, ...] = ("moe",),
    shots: int = 5,
    test_limit: int | None = 1000,
    val_limit: int = 600,
    families: dict[str, tuple[str, ...]] = FAMILIES,
) -> None:
    """Weight-space interpolation towards the base (training/interpolate.py) of each finished fold's
    model: for each `alpha`, the held-out family's validation accuracy (what chooses alpha) and the
    same test scores as the trained model, written as variant `<variant>@<alpha>`."""
    from training.interpolate import towards_base

    for variant in variants:
        trained = _read(out / f"{variant}.json")
        for alpha in alphas:
            name = f"{variant}@{alpha:g}"
            results = _read(out / f"{name}.json")
            for fold in trained:
                if fold in results:
                    continue
                model, tokenizer, _ = load_checkpoint(out / "runs" / f"{fold}-{variant}" / "final")
                towards_base(model, alpha)
                val = {}
                for s in families[fold]:
                    target = ensure_val_split(load_taxonomies([s])[0])
                    (scored,) = score_shots(model, tokenizer, target, "val", (0,), val_limit)
                    val[Path(s).name] = scored.closed_accuracy()
                results[fold] = {
                    "alpha": alpha,
                    "val": val,
                    "val_mean": float(np.mean(list(val.values()))),
                    "sets": {
                        Path(s).name: held_out_scores(model, tokenizer, s, shots, test_limit)
                        for s in families[fold]
                    },
                }
                _write(out / f"{name}.json", results)
                report = tables(out, shots)
                _write(out / "lofo.md", report + "\n")
                print(report, flush=True)


def accuracy_table(results: dict[str, dict[str, Any]], shots: int) -> str:
    columns = [(v, "zero") for v in results] + [(v, "shots") for v in results]
    header = [_label(v) for v in results]
    lines = [
        "| family | held-out set | "
        + " | ".join(header)
        + " | "
        + " | ".join(f"{h} + {shots} ex." for h in header)
        + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    cells_of: dict[tuple[str, str], dict[tuple[str, str], float]] = {c: {} for c in columns}
    folds = dict.fromkeys(f for r in results.values() for f in r)
    for fold in folds:
        names = dict.fromkeys(s for r in results.values() for s in r.get(fold, {}).get("sets", {}))
        for name in names:
            cells = []
            for variant, key in columns:
                value = results[variant].get(fold, {}).get("sets", {}).get(name, {}).get(key)
                cells.append("-" if value is None else f"{value:.3f}")
                if value is not None:
                    cells_of[(variant, key)][(fold, name)] = value
            lines.append(f"| {fold} | {name} | " + " | ".join(cells) + " |")
    if folds:
        means = [f"**{np.mean(list(v.values())):.3f}** ({len(v)})" if v else "-" for v in cells_of.values()]
        lines.append("| **mean**, each column's sets (n) | | " + " | ".join(means) + " |")
        # Columns cover different folds while runs are under way: compare them on shared sets only.
        shared = set.intersection(*(set(v) for v in cells_of.values()))
        if shared and any(len(v) > len(shared) for v in cells_of.values()):
            means = [f"{np.mean([v[k] for k in shared]):.3f}" for v in cells_of.values()]
            lines.append(f"| mean, the {len(shared)} sets every column has | | " + " | ".join(means) + " |")
    return "\n".join(lines)


def decision_table(results: dict[str, dict[str, Any]]) -> str:
    """Accuracy with fallback as a class, fallback recall and in-scope accuracy (calibrated
    criterion) at each model's default threshold and at the per-router fitted one."""
    lines = [
        "| held-out set | "
        + " | ".join(f"{_label(v)}: default / fitted acc. (recall)" for v in results)
        + " |",
        "|---|" + "---|" * len(results),
    ]
    names = dict.fromkeys(
        (f, s) for r in results.values() for f, row in r.items() for s in row.get("sets", {})
    )
    for fold, name in names:
        cells = []
        for variant in results:
            d = results[variant].get(fold, {}).get("sets", {}).get(name, {}).get("decisions", {})
            default, fitted = d.get("calibrated@default"), d.get("calibrated@fitted")
            if default and fitted:
                cells.append(
                    f"{default['accuracy']:.3f} / {fitted['accuracy']:.3f}"
                    f" ({_num(default.get('fallback_recall'))} / {_num(fitted.get('fallback_recall'))})"
                )
            else:
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def selection(results: dict[str, dict[str, Any]], variant: str) -> dict[int, float]:
    """Mean over folds of the held-out family's validation accuracy at each evaluated step (only
    steps every fold evaluated)."""
    curves = [
        {h["step"]: h["val_mean"] for h in row.get("history", [])}
        for row in results.get(variant, {}).values()
    ]
    if not curves:
        return {}
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return {s: float(np.mean([c[s] for c in curves])) for s in steps}


def selection_table(results: dict[str, dict[str, Any]]) -> str:
    """What selection sees: the held-out families' validation accuracy, by training step and by
    interpolation weight, as means over the folds each covers (never test rows)."""
    lines = ["| variant | held-out val accuracy (mean over folds) | best |", "|---|---|---|"]
    for variant in ("moe", "dense", "open"):
        curve = selection(results, variant)
        if curve:
            best = max(curve, key=lambda s: curve[s])
            text = ", ".join(f"step {s}: {v:.3f}" for s, v in curve.items())
            lines.append(f"| {variant} | {text} | step {best} |")
        mixes = {v: r for v, r in results.items() if v.startswith(f"{variant}@") and r}
        if mixes:
            common = set.intersection(*(set(r) for r in mixes.values()))
            common &= set(results.get(variant, {}))
            if common:
                means = {v: float(np.mean([r[f]["val_mean"] for f in common])) for v, r in mixes.items()}
                # alpha 1 is the trained model itself: its last evaluation on the same folds.
                trained = results[variant]
                means[f"{variant}@1"] = float(
                    np.mean([trained[f]["history"][-1]["val_mean"] for f in common])
                )
                best = max(means, key=lambda v: means[v])
                text = ", ".join(f"{v}: {m:.3f}" for v, m in sorted(means.items()))
                lines.append(f"| {variant}, interpolated ({len(common)} folds) | {text} | {best} |")
    return "\n".join(lines)


def tables(out: Path, shots: int = 5) -> str:
    results = _all_results(out)
    return "\n\n".join([accuracy_table(results, shots), decision_table(results), selection_table(results)])
