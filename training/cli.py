"""Command line for training and evaluation. Nothing runs at import.

    python -m training.cli train    --sets banking77 hwu64 snips mmlu p3_task_types llm_task_types --out DIR
    python -m training.cli retrain  --tasks tasks.json --data labelled.jsonl --out DIR
    python -m training.cli keep-examples --checkpoint DIR --tasks tasks.json --data labelled.jsonl --out DIR2
    python -m training.cli evaluate --checkpoint DIR --tasks tasks.json --data labelled.jsonl [--shots 5]
    python -m training.cli evaluate --checkpoint DIR --set banking77_oos --report reports/b77oos
    python -m training.cli loto     --out runs/loto            # leave-one-taxonomy-out table
    python -m training.cli lofo     --out runs/lofo            # leave-one-family-out table (resumable)
    python -m training.cli openset  --checkpoint DIR --out DIR # fallback / preamble / fitted table
    torchrun --nproc_per_node 2 -m training.cli train ...      # data-parallel (DDP)

Data set names are folders of ../shared/data or `llm_task_types` (the project's own prompts).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from models import load_checkpoint
from models.checkpoint import save_difference
from training.data import Taxonomy, load_taxonomies, read_labelled, read_tasks
from training.evaluate import metrics, pick_threshold, score
from training.train import TrainConfig, _distributed, train

log = logging.getLogger(__name__)


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    for f in fields(TrainConfig):
        if f.name in ("extra", "moe_layers", "init"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None)
    parser.add_argument("--moe-layers", type=int, nargs="*", default=None, help="encoder layers with experts")
    parser.add_argument("--init", default=None, help="checkpoint to start from (default: the shipped one)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument(
        "--half-deltas",
        action="store_true",
        help="store changed pretrained weights as float16 differences (half the size, not bit-exact)",
    )


def _train_config(args: argparse.Namespace, extra: dict[str, Any]) -> TrainConfig:
    values = {
        f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None
    }
    if "moe_layers" in values:
        values["moe_layers"] = tuple(values["moe_layers"])
    return replace(TrainConfig(), **values, extra=extra)


def _file_taxonomy(tasks: Path, data: Path, name: str) -> Taxonomy:
    task_list = read_tasks(tasks)
    return Taxonomy(name, task_list, read_labelled(data, [t.name for t in task_list], val_share=0.1))


def _fit_and_save(
    cfg: TrainConfig, sets: list[Taxonomy], out: Path, half_deltas: bool = False
) -> dict[str, Any]:
    # Resumable: the resume point sits beside the checkpoint; an interrupted run continues there.
    model, _, summary = train(cfg, sets, run_dir=out.with_name(out.name + ".state"))
    if _distributed()[0] != 0:
        return summary
    if not summary["finished"]:
        print(
            f"stopped at step {summary['steps']} of {cfg.max_steps}; run the same command again to continue"
        )
        return summary
    model.config = replace(model.config, threshold=round(summary["threshold"], 4))
    metadata = {
        "trained_on": [t.name for t in sets],
        "train_config": {k: v for k, v in cfg.__dict__.items() if k != "extra"} | cfg.extra,
        "summary": {k: v for k, v in summary.items() if k != "history"},
        "history": summary["history"],
    }
    save_difference(model, out, metadata, torch.float16 if half_deltas else None)
    print(
        f"saved {out}: best val {summary['best_val_mean']:.4f} at step {summary['best_step']} "
        f"of {summary['steps']}, threshold {summary['threshold']:.3f} ({summary['threshold_source']}), "
        f"{summary['seconds']}s"
    )
    return summary


def cmd_train(args: argparse.Namespace) -> None:
    if args.sets == ["shipped"]:
        from training.lofo import training_pool

        args.sets = training_pool()
    sets = load_taxonomies(args.sets)
    _fit_and_save(_train_config(args, {"sets": args.sets}), sets, args.out, args.half_deltas)


def cmd_retrain(args: argparse.Namespace) -> None:
    taxonomy = _file_taxonomy(args.tasks, args.data, args.name)
    cfg = _train_config(args, {"tasks": str(args.tasks), "data": str(args.data)})
    _fit_and_save(cfg, [taxonomy], args.out, args.half_deltas)


def cmd_keep_examples(args: argparse.Namespace) -> None:
    """A checkpoint retrained with --task-head but without --nearest-examples gets its taxonomy's
    train-split prompts as learned examples, as if trained with it (raw threshold chosen again)."""
    from training.data import ensure_val_split
    from training.train import learn_examples

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, metadata = load_checkpoint(args.checkpoint)
    if not model.learned_tasks:
        raise SystemExit(f"{args.checkpoint} has no learned task vectors (retrain it with --task-head)")
    taxonomy = ensure_val_split(_file_taxonomy(args.tasks, args.data, args.name))
    missing = [t.name for t in taxonomy.tasks if t.description not in model.learned_tasks]
    if missing:
        raise SystemExit(
            f"{args.checkpoint} learned no vector for {len(missing)} of these tasks, e.g. {missing[:3]}"
        )
    model.learned_examples = learn_examples(model, tokenizer, taxonomy)
    threshold, how = pick_threshold([score(model, tokenizer, taxonomy, "val", limit=args.val_limit)])
    model.config = replace(model.config, threshold=round(threshold, 4))
    kept = sum(len(v) for v in model.learned_examples.values())
    metadata["learned_examples"] = {"prompts": kept, "source": str(args.data), "threshold_source": how}
    save_difference(model, args.out, metadata, torch.float16 if args.half_deltas else None)
    print(
        f"saved {args.out}: {kept} learned examples for {len(model.learned_examples)} tasks, "
        f"threshold {threshold:.3f}"
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from training import openset
    from training.report import write_report

    overrides = {} if args.nearest_weight is None else {"nearest_example_weight": args.nearest_weight}
    model, tokenizer, metadata = load_checkpoint(args.checkpoint, **overrides)
    taxonomy = (
        load_taxonomies([args.set])[0] if args.set else _file_taxonomy(args.tasks, args.data, args.data.stem)
    )
    threshold, how = model.config.threshold, "checkpoint"
    if args.calibrate and taxonomy.has_split("val"):
        threshold, how = pick_threshold([score(model, tokenizer, taxonomy, "val", args.shots)])
    scored = score(model, tokenizer, taxonomy, args.split, args.shots)
    report = metrics(scored, threshold, model.config.temperature)
    report |= {
        "checkpoint": str(args.checkpoint),
        "taxonomy": taxonomy.name,
        "split": args.split,
        "shots": args.shots,
        "threshold_source": how,
    }
    summary = {
        k: report[k]
        for k in ("accuracy", "closed_set_accuracy", "macro_f1", "ece")
        if report.get(k) is not None
    }
    for key in ("fallback_precision", "fallback_recall", "fallback_auroc"):
        if key in report:
            summary[key] = report[key]
    report["decisions"] = openset.decisions(model, tokenizer, taxonomy, args.split, args.shots)
    print(
        json.dumps(
            {
                "taxonomy": taxonomy.name,
                "split": args.split,
                "threshold": round(threshold, 4),
                **{k: round(v, 4) for k, v in summary.items()},
                "decisions": report["decisions"],
            },
            indent=2,
        )
    )
    if args.report:
        write_report(report, args.report)
        print(f"report: {args.report}/report.md")


def cmd_loto(args: argparse.Namespace) -> None:
    from training.loto import PUBLIC, run

    run(
        _train_config(args, {}),
        args.out,
        tuple(args.holdout or PUBLIC),
        args.shots,
        test_limit=args.test_limit,
    )


def cmd_lofo(args: argparse.Namespace) -> None:
    from training import lofo

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tables_only:
        print(lofo.tables(args.out, args.shots))
        return
    if args.alphas:
        trained = tuple(v for v in args.variants if v != "plain")
        lofo.interpolate(args.out, tuple(args.alphas), trained, args.shots, args.test_limit)
        return
    lofo.run(
        _train_config(args, {"protocol": "lofo"}),
        args.out,
        tuple(args.families or lofo.FAMILIES),
        tuple(args.variants),
        args.shots,
        args.test_limit,
    )


def cmd_openset(args: argparse.Namespace) -> None:
    from models.nomatch import background_prompts
    from training import openset
    from training.families import FAMILIES

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_checkpoint(args.checkpoint)
    sets = args.sets or [s for members in FAMILIES.values() for s in members if s != "banking77"]
    preamble = args.preamble.read_text() if args.preamble else None
    result = openset.run(
        model, tokenizer, background_prompts(), sets, args.context, tuple(args.shots), args.limit, preamble
    )
    result |= {"checkpoint": str(args.checkpoint), "preamble": str(args.preamble or "")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openset.json").write_text(json.dumps(result, indent=1) + "\n")
    tables = [
        openset.table(result, how, n, criterion)
        for criterion in ("calibrated", "similarity")
        for n in args.shots
        for how in ("shipped", "fitted")
    ]
    summary = [
        openset.bar_summary(result, how, n, criterion)
        for criterion in ("calibrated", "similarity")
        for how in ("shipped", "selected", "per_kind", "fitted")
        for n in args.shots
    ]
    (args.out / "openset.md").write_text("\n\n".join(tables) + "\n\n" + "\n".join(summary) + "\n")
    print("\n\n".join(tables))
    print("\n".join(summary))
    print("thresholds chosen on val:", json.dumps(result["thresholds"]))
    print(
        "chosen on val per kind of router (by examples per task):", json.dumps(result["thresholds_by_shots"])
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m training.cli", description=__doc__.splitlines()[0])
    sub = root.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train on several taxonomies (prompts to descriptions in general)")
    p.add_argument(
        "--sets",
        nargs="+",
        required=True,
        help="set names, or `shipped`: every set that may train shipped weights",
    )
    _add_train_flags(p)
    p.set_defaults(run=cmd_train)
    p = sub.add_parser("retrain", help="train on a new taxonomy: task file + labelled JSONL")
    p.add_argument(
        "--tasks", type=Path, required=True, help="JSON/YAML list of {name, description, examples?}"
    )
    p.add_argument("--data", type=Path, required=True, help='JSONL rows {"text", "label"}')
    p.add_argument("--name", default="custom")
    _add_train_flags(p)
    p.set_defaults(run=cmd_retrain)
    p = sub.add_parser(
        "keep-examples",
        help="add a retrained checkpoint's train prompts as learned examples (nearest-example scoring)",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint retrained with --task-head")
    p.add_argument("--tasks", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--name", default="custom")
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--half-deltas", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=cmd_keep_examples)
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a taxonomy")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--set", help="a data set name (instead of --tasks/--data)")
    p.add_argument("--tasks", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--shots", type=int, default=0, help="train prompts per task used as task examples")
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pick the threshold on the val split (default) instead of the checkpoint's",
    )
    p.add_argument("--report", type=Path, help="write report.json, report.md and plots here")
    p.add_argument(
        "--nearest-weight",
        type=float,
        help="score with this share from the nearest learned example (default: the checkpoint's)",
    )
    p.set_defaults(run=cmd_evaluate)
    p = sub.add_parser("loto", help="leave-one-taxonomy-out table: plain vs no-experts vs MoE (+ examples)")
    p.add_argument("--holdout", nargs="*", help="sets to hold out (default: every public set)")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--test-limit", type=int, help="score a seeded sample of this many test rows per set")
    _add_train_flags(p)
    p.set_defaults(run=cmd_loto)
    p = sub.add_parser(
        "lofo", help="leave-one-family-out table: plain vs MoE vs no-experts, resumable, one fold at a time"
    )
    p.add_argument("--families", nargs="*", help="folds to run (default: every family)")
    p.add_argument("--variants", nargs="+", default=["plain", "moe", "dense"], help="plain, moe, dense, open")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--test-limit", type=int, default=1000, help="seeded sample of test rows per set")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--tables-only", action="store_true", help="print the tables from --out and stop")
    p.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        help="instead of training: score finished folds' models interpolated towards the base by these",
    )
    _add_train_flags(p)
    p.set_defaults(run=cmd_lofo)
    p = sub.add_parser("openset", help="open-world table: fallback, agent preambles, fitted thresholds")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--sets", nargs="*", help="held-out sets (default: every shared set but banking77)")
    p.add_argument("--context", choices=("latest_turn", "conversation"), help="default: the checkpoint's")
    p.add_argument("--preamble", type=Path, help="a system prompt put in front of every conversation")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    p.add_argument("--limit", type=int, default=1000, help="test rows per set (val: half)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=cmd_openset)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if args.command == "evaluate" and not args.set and not (args.tasks and args.data):
        parser().error("evaluate needs --set, or --tasks and --data")
    args.run(args)


if __name__ == "__main__":
    main()
