"""Training for real on a tiny BERT: loss goes down, checkpoints round-trip bit-exactly, the CLI
retrains and evaluates, and a 2-process DDP run (gloo, CPU) works."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models import load_checkpoint, save_checkpoint
from models.checkpoint import WEIGHTS_FILE, base_state
from tests.training.tiny import PROMPTS, TASKS, make_checkpoint, make_dataset
from training.data import load_dataset_dir
from training.encode import as_user, embed
from training.train import (
    OPEN_SET_LEVEL,
    TrainConfig,
    _open_set_loss,
    _relational_kd,
    _Sampler,
    build_model,
    parse_set_weights,
    train,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_checkpoint(root), make_dataset(root / "data")


def fixed_loss(model: torch.nn.Module, tokenizer: object) -> float:
    """Cross-entropy of every prompt against all task descriptions at the training scale."""
    model.eval()
    labels = [i for i, task in enumerate(TASKS) for _ in PROMPTS[task["name"]]]
    prompts = embed(model, tokenizer, as_user([p for t in TASKS for p in PROMPTS[t["name"]]]))
    tasks = embed(model, tokenizer, as_user([t["description"] for t in TASKS]), side="task")
    return torch.nn.functional.cross_entropy(20 * prompts @ tasks.T, torch.tensor(labels)).item()


def config(init: Path, **overrides: object) -> TrainConfig:
    values = dict(
        init=str(init),
        moe_layers=(0, 1),
        frozen_layers=0,
        batch_size=8,
        hard_negatives=2,
        max_steps=40,
        eval_every=20,
        warmup_steps=5,
        lr=1e-2,
        max_len=32,
        progress=False,
        seed=1,
    )
    return TrainConfig(**{**values, **overrides})  # type: ignore[arg-type]


def test_tiny_training_lowers_the_loss_and_balances_experts(tiny: tuple[Path, Path]) -> None:
    checkpoint, data = tiny
    cfg = config(checkpoint, keep_best=False)  # the last weights: 8 val rows are too few to pick by
    start, tokenizer = build_model(cfg)
    before = fixed_loss(start, tokenizer)
    model, tokenizer, summary = train(cfg, [load_dataset_dir(data)])
    after = fixed_loss(model, tokenizer)
    assert after < before - 0.05, (before, after)
    assert summary["steps"] >= 20 and summary["trainable_parameters"] > 0
    usage = summary["expert_usage"]
    assert len(usage) == 2 and all(len(layer) == 4 and sum(layer) > 0 for layer in usage)


def test_frozen_lower_layers_stay_bit_identical_while_the_top_trains(tiny: tuple[Path, Path]) -> None:
    checkpoint, data = tiny
    cfg = config(checkpoint, moe_layers=(1,), frozen_layers=1, train_base=True, keep_best=False)
    start, tokenizer = build_model(cfg)
    before = fixed_loss(start, tokenizer)
    model, tokenizer, _ = train(cfg, [load_dataset_dir(data)])
    assert fixed_loss(model, tokenizer) < before - 0.05
    old, new = start.state_dict(), model.state_dict()
    lower = [k for k in new if ".embeddings." in k or ".layer.0." in k]
    upper = [k for k in new if ".layer.1." in k and ".gate." not in k and ".experts." not in k]
    assert lower and all(torch.equal(old[k], new[k]) for k in lower)
    assert upper and any(not torch.equal(old[k], new[k]) for k in upper)  # train_base: the top moved


def test_frozen_layers_must_sit_below_every_expert_layer(tiny: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="frozen_layers=2 must be between 0 and the lowest expert layer"):
        build_model(config(tiny[0], moe_layers=(1,), frozen_layers=2))


def test_split_forward_equals_the_full_forward(tiny: tuple[Path, Path]) -> None:
    model, tokenizer = build_model(config(tiny[0], moe_layers=(1,)))
    batch = tokenizer(
        ["play some jazz", "refund my last order please, it broke"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        full = model.encode_prompts(batch.input_ids, batch.attention_mask)
        states = model.encoder.lower(batch.input_ids, batch.attention_mask, 1)
        split = model.encode_upper(states, batch.attention_mask, 1)
    torch.testing.assert_close(split, full, rtol=1e-5, atol=1e-6)


def test_training_is_reproducible(tiny: tuple[Path, Path]) -> None:
    checkpoint, data = tiny
    cfg = config(checkpoint, max_steps=8, eval_every=8)
    first, _, _ = train(cfg, [load_dataset_dir(data)])
    second, _, _ = train(cfg, [load_dataset_dir(data)])
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_moe_checkpoint_round_trips_bit_exactly_storing_only_new_weights(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, data = tiny
    model, _, _ = train(config(checkpoint, max_steps=6, eval_every=6), [load_dataset_dir(data)])
    save_checkpoint(model, tmp_path, {"k": "v"}, base_state=base_state(model.config.encoder))
    stored = load_file(str(tmp_path / WEIGHTS_FILE))
    assert stored and all(".gate." in k or ".experts." in k for k in stored)  # base was frozen
    reloaded, _, metadata = load_checkpoint(tmp_path)
    assert metadata == {"k": "v"} and reloaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def run_cli(args: list[str], torchrun: bool = False) -> subprocess.CompletedProcess[str]:
    head = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        if torchrun
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*head, "-m", "training.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )


def test_retrain_with_two_ddp_processes_then_evaluate(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, data = tiny
    rows = [json.dumps({"text": p, "label": t}) for t, ps in PROMPTS.items() for p in ps]
    (tmp_path / "labelled.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "retrained"
    trained = run_cli(
        [
            "retrain",
            "--tasks",
            str(data / "tasks.json"),
            "--data",
            str(tmp_path / "labelled.jsonl"),
            "--init",
            str(checkpoint),
            "--out",
            str(out),
            "--moe-layers",
            "1",
            "--frozen-layers",  # the cached lower layer under DDP
            "1",
            "--train-base",
            "--max-steps",
            "10",
            "--eval-every",
            "5",
            "--batch-size",
            "8",
            "--hard-negatives",
            "2",
            "--no-progress",
        ],
        torchrun=True,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "saved" in trained.stdout
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["summary"]["steps"] == 10
    evaluated = run_cli(
        [
            "evaluate",
            "--checkpoint",
            str(out),
            "--tasks",
            str(data / "tasks.json"),
            "--data",
            str(tmp_path / "labelled.jsonl"),
            "--split",
            "train",
            "--report",
            str(tmp_path / "report"),
        ]
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["rows"] > 0 and 0 <= report["accuracy"] <= 1 and "macro_f1" in report
    for key in ("calibrated@default", "calibrated@fitted", "similarity@default", "similarity@fitted"):
        decided = report["decisions"][key]
        assert 0 <= decided["accuracy"] <= 1 and "in_scope_accuracy" in decided
    assert '"decisions"' in evaluated.stdout
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000
    assert (tmp_path / "report" / "reliability.png").stat().st_size > 1000


def test_the_server_serves_a_trained_moe_checkpoint(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    from taskrouter.v1 import taskrouter_pb2 as pb
    from tests.conftest import ServerThread, make_config

    checkpoint, data = tiny
    model, _, _ = train(config(checkpoint, max_steps=4, eval_every=4), [load_dataset_dir(data)])
    save_checkpoint(model, tmp_path / "moe", {}, base_state=base_state(model.config.encoder))
    thread = ServerThread(make_config(model={"checkpoint": str(tmp_path / "moe")})).load()
    try:
        assert thread.runtime.engine.model.moe_layers  # the experts are live behind the same interface
        response = thread.stub.Classify(pb.ClassifyRequest(router="support", prompt="refund my order"))
        assert (
            response.task in {"classify", "customer-qa", "reasoning", "fallback"}
            and len(response.scores) == 3
        )
    finally:
        thread.stop()


def test_leave_one_taxonomy_out_produces_the_table(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    from training.loto import run

    checkpoint, data = tiny
    other = make_dataset(tmp_path / "other")  # a second taxonomy (same prompts: fine for a smoke run)
    results = run(
        config(checkpoint, max_steps=4, eval_every=4),
        tmp_path / "loto",
        holdouts=(str(data),),
        shots=2,
        pool=(str(data), str(other)),
        always=(),
        plain_checkpoint=checkpoint,
    )
    row = results["data"]
    assert row["trained_on"] == ["other"]
    assert all(0 <= row[k] <= 1 for k in ("plain", "plain+5", "dense", "moe", "moe+5"))
    assert "| data |" in (tmp_path / "loto" / "loto.md").read_text()
    for name in ("plain", "dense", "moe"):  # the routing decision as served, default and fitted
        decided = row[f"{name}_decisions"]
        assert 0 <= decided["calibrated@default"]["accuracy"] <= 1
        assert 0 <= decided["calibrated@fitted"]["accuracy"] <= 1
    assert (tmp_path / "loto" / "data-moe" / "weights.safetensors").is_file()


def test_an_interrupted_run_resumes_where_it_stopped(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """stop_after ends a call early; the next call with the same run_dir continues from the resume
    point (weights, optimizer, schedule, sampler, RNG) and ends where an uninterrupted run ends."""
    checkpoint, data = tiny
    cfg = config(checkpoint, max_steps=8, eval_every=2, keep_best=False)
    straight, _, whole = train(cfg, [load_dataset_dir(data)])
    first, _, part = train(replace(cfg, stop_after=3), [load_dataset_dir(data)], run_dir=tmp_path / "run")
    assert not part["finished"] and part["steps"] == 3
    assert (tmp_path / "run" / "resume.pt").is_file() and (tmp_path / "run" / "step-2.pt").is_file()
    resumed, _, rest = train(cfg, [load_dataset_dir(data)], run_dir=tmp_path / "run")
    assert rest["finished"] and rest["steps"] == 8 and whole["finished"]
    assert [h["step"] for h in rest["history"]] == [h["step"] for h in whole["history"]]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert rest["steps_per_second"] > 0 and rest["prompts_per_second"] > 0
    with pytest.raises(ValueError, match="other settings"):  # a run continues only with its own flags
        train(replace(cfg, lr=0.5), [load_dataset_dir(data)], run_dir=tmp_path / "run")


def test_task_names_read_as_text() -> None:
    from training.train import label_text

    assert label_text("buses.buy_bus_ticket") == "buses: buy bus ticket"
    assert label_text("GetWeather") == "get weather"
    assert label_text("card-arrival") == "card arrival"


def test_leave_one_family_out_trains_on_the_other_families(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    from training import lofo

    checkpoint, data = tiny
    other = make_dataset(tmp_path / "other")
    families = {"first": (str(data),), "second": (str(other),)}
    cfg = config(checkpoint, max_steps=4, eval_every=2)
    results = lofo.run(
        cfg, tmp_path / "lofo", ("first",), ("plain", "moe"), 2, None, families, plain_checkpoint=checkpoint
    )
    row = results["moe"]["first"]
    assert row["trained_on"] == [str(other)]
    scored = row["sets"]["data"]
    assert 0 <= scored["zero"] <= 1 and 0 <= scored["shots"] <= 1
    assert 0 <= scored["decisions"]["calibrated@fitted"]["accuracy"] <= 1
    # The held-out family's validation accuracy at every evaluation: what selection uses.
    assert [h["step"] for h in row["history"]] == [0, 2, 4]
    assert set(lofo.selection(results, "moe")) == {0, 2, 4}
    table = (tmp_path / "lofo" / "lofo.md").read_text()
    assert "| first | data |" in table and "| moe | step 0:" in table
    # A finished fold is not run again.
    again = lofo.run(
        cfg, tmp_path / "lofo", ("first",), ("moe",), 2, None, families, plain_checkpoint=checkpoint
    )
    assert again["moe"]["first"] == row
    lofo.interpolate(tmp_path / "lofo", (0.5,), ("moe",), 2, None, families=families)
    mixed = json.loads((tmp_path / "lofo" / "moe@0.5.json").read_text())["first"]
    assert mixed["alpha"] == 0.5 and 0 <= mixed["val_mean"] <= 1 and "data" in mixed["sets"]
    assert "MoE x0.5" in (tmp_path / "lofo" / "lofo.md").read_text()
    assert lofo.training_pool(("banking",))[:1] != ["banking77"]
    assert "p3_task_types" not in lofo.training_pool() and "trec_qc_fine" not in lofo.training_pool()


def test_a_task_head_is_learned_saved_and_used_for_those_descriptions_only(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    from models.checkpoint import TASK_HEAD_FILE
    from training.evaluate import score

    checkpoint, data = tiny
    taxonomy = load_dataset_dir(data)
    model, tokenizer, summary = train(config(checkpoint, task_head=True, keep_best=False), [taxonomy])
    descriptions = [t.description for t in taxonomy.tasks]
    assert list(model.learned_tasks) == descriptions
    save_checkpoint(model, tmp_path / "head", {}, base_state=base_state(model.config.encoder))
    assert json.loads((tmp_path / "head" / TASK_HEAD_FILE).read_text()) == descriptions
    reloaded, _, _ = load_checkpoint(tmp_path / "head")
    assert not hasattr(reloaded, "task_head")  # serving holds the vectors, not a parameter
    for text in descriptions:
        torch.testing.assert_close(reloaded.learned_tasks[text], model.learned_tasks[text])
    plain = embed(reloaded, tokenizer, as_user([*descriptions, "a description it never saw"]), side="task")
    described = reloaded.describe([*descriptions, "a description it never saw"], plain)
    torch.testing.assert_close(described[:-1], torch.stack([reloaded.learned_tasks[t] for t in descriptions]))
    torch.testing.assert_close(described[-1], plain[-1])  # other routers' tasks read as usual
    assert not torch.allclose(described[0], plain[0])
    assert 0 <= score(reloaded, tokenizer, taxonomy, "train").closed_accuracy() <= 1
    # The server's engine builds prototypes through the same `describe`.
    from server.classify.engine import Engine, TaskText
    from server.config import ModelSection

    engine = Engine.load(ModelSection(checkpoint=str(tmp_path / "head"), backend="torch"))
    served = engine.task_prototypes([TaskText(descriptions[0]), TaskText("a description it never saw")])
    served_rows = served.prototypes.float().cpu()
    torch.testing.assert_close(served_rows[0], reloaded.learned_tasks[descriptions[0]])
    torch.testing.assert_close(served_rows[1], plain[-1].float().cpu(), rtol=1e-4, atol=1e-5)
    assert not served.has_neighbours  # trained without nearest_examples: vectors only
    with pytest.raises(ValueError, match="one taxonomy"):
        train(config(checkpoint, task_head=True), [taxonomy, load_dataset_dir(make_dataset(tmp_path / "b"))])


def test_learned_examples_are_kept_saved_and_scored_by_the_server(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    """--nearest-examples: the taxonomy's train prompts, embedded by the final model, travel with
    the checkpoint (float16) and score their task with the nearest one, in evaluation as served."""
    from models import ChatMessage
    from server.classify.engine import Engine, TaskText
    from server.config import ModelSection
    from training.data import ensure_val_split
    from training.evaluate import score

    checkpoint, data = tiny
    taxonomy = load_dataset_dir(data)
    cfg = config(checkpoint, task_head=True, nearest_examples=True, keep_best=False)
    model, tokenizer, _ = train(cfg, [taxonomy])
    train_rows = ensure_val_split(taxonomy).rows("train", with_fallback=False)
    assert sum(len(v) for v in model.learned_examples.values()) == len(train_rows)
    assert set(model.learned_examples) <= set(model.learned_tasks)
    save_checkpoint(model, tmp_path / "nn", {}, base_state=base_state(model.config.encoder))
    reloaded, _, _ = load_checkpoint(tmp_path / "nn")
    for text, rows in model.learned_examples.items():  # stored in float16
        torch.testing.assert_close(reloaded.learned_examples[text], rows, rtol=0, atol=2e-3)
    # A train prompt is its own nearest learned example: (1 - w) x cos(prototype) + w x 1.0.
    prompt = train_rows[0]
    own = taxonomy.task_names.index(prompt.label)
    texts = [t.description for t in taxonomy.tasks]
    engine = Engine.load(ModelSection(checkpoint=str(tmp_path / "nn"), backend="torch"))
    vectors = engine.task_prototypes([TaskText(t) for t in texts])
    assert vectors.has_neighbours and vectors.weight == reloaded.config.nearest_example_weight
    [served] = engine.score([engine.prepare(list(prompt.messages))], [vectors])
    embedding = embed(reloaded, tokenizer, [prompt.messages])
    cosine = (embedding @ vectors.prototypes.float().cpu().T)[0].numpy()
    w = vectors.weight
    assert served[own] == pytest.approx((1 - w) * cosine[own] + w * 1.0, abs=3e-3)
    # Another router's tasks (other descriptions) read as the prototype alone.
    [other] = engine.score(
        [engine.prepare(list(prompt.messages))], [engine.task_prototypes([TaskText("unrelated chores")])]
    )
    plain_other = embed(reloaded, tokenizer, [[ChatMessage("user", "unrelated chores")]], side="task")
    assert other[0] == pytest.approx(float((embedding @ plain_other.T)[0, 0]), abs=1e-4)
    assert 0 <= score(reloaded, tokenizer, taxonomy, "train").closed_accuracy() <= 1
    with pytest.raises(ValueError, match="add task_head"):
        train(config(checkpoint, nearest_examples=True), [taxonomy])


def test_interpolating_the_experts_runs_from_the_base_to_the_trained_model(tiny: tuple[Path, Path]) -> None:
    from training.interpolate import towards_base

    checkpoint, data = tiny
    cfg = config(checkpoint, keep_best=False, moe_layers=(1,), frozen_layers=1, train_base=True)
    model, tokenizer, _ = train(cfg, [load_dataset_dir(data)])  # experts and the top layer moved
    texts = as_user(["play some jazz", "will it rain tomorrow"])
    trained = embed(model, tokenizer, texts)
    base, _, _ = load_checkpoint(checkpoint)
    plain = embed(base, tokenizer, texts)
    towards_base(model, 1.0)
    torch.testing.assert_close(embed(model, tokenizer, texts), trained)
    towards_base(model, 0.0)  # every correction gone: the base encoder's answers
    torch.testing.assert_close(embed(model, tokenizer, texts), plain, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="between 0"):
        towards_base(model, 1.5)
    half, _, _ = train(cfg, [load_dataset_dir(data)])
    towards_base(half, 0.5)
    halfway = embed(half, tokenizer, texts)
    assert not torch.allclose(halfway, trained, atol=1e-4) and not torch.allclose(halfway, plain, atol=1e-4)


def test_the_open_set_term_wants_the_positive_above_the_level_and_the_rest_below() -> None:
    level = torch.tensor(20 * 0.3, requires_grad=True)
    target = torch.tensor([0, 1])
    separated = torch.tensor([[20 * 0.8, 20 * 0.1, 20 * 0.0], [20 * 0.1, 20 * 0.8, 20 * 0.0]])
    crowded = torch.tensor([[20 * 0.8, 20 * 0.6, 20 * 0.0], [20 * 0.6, 20 * 0.8, 20 * 0.0]])
    low = _open_set_loss(separated, target, level, 1.0)
    high = _open_set_loss(crowded, target, level, 1.0)
    # A neighbour above the level is what an unseen neighbouring intent looks like: it costs.
    assert low.item() < 0.1 and high.item() > 1.0
    # Same softmax over the candidates alone, yet the open-set loss tells the two rows apart.
    plain = torch.nn.functional.cross_entropy
    assert plain(separated - 20 * 0.5, target).item() == pytest.approx(
        plain(separated, target).item(), rel=1e-5
    )
    assert _open_set_loss(separated - 20 * 0.5, target, level, 1.0).item() > low.item() + 0.5
    high.backward()
    assert level.grad is not None and level.grad.item() < 0  # raise the level above the neighbours


def test_training_with_the_open_set_term_learns_its_level_and_resumes(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, data = tiny
    cfg = config(checkpoint, max_steps=6, eval_every=2, keep_best=False, open_set=1.0)
    straight, _, whole = train(cfg, [load_dataset_dir(data)])
    assert whole["open_set_level"] is not None and whole["open_set_level"] != 0.3  # it moved
    assert not hasattr(straight, OPEN_SET_LEVEL)  # nothing extra is saved or served
    train(replace(cfg, stop_after=3), [load_dataset_dir(data)], run_dir=tmp_path / "run")
    resumed, _, rest = train(cfg, [load_dataset_dir(data)], run_dir=tmp_path / "run")
    assert rest["open_set_level"] == whole["open_set_level"]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_relational_distillation_is_zero_at_the_teacher_and_grows_as_the_geometry_moves() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    assert _relational_kd(teacher, teacher, 20.0).item() == pytest.approx(0.0, abs=1e-6)
    # A rotation keeps every similarity, so it costs nothing; moving the rows apart does.
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert _relational_kd(teacher @ rotation, teacher, 20.0).item() == pytest.approx(0.0, abs=1e-5)
    small = torch.nn.functional.normalize(teacher + 0.1 * torch.randn(6, 16), dim=-1)
    large = torch.nn.functional.normalize(teacher + 1.0 * torch.randn(6, 16), dim=-1)
    assert 0 < _relational_kd(small, teacher, 20.0).item() < _relational_kd(large, teacher, 20.0).item()
    assert _relational_kd(teacher[:2], teacher[:2], 20.0).item() == 0.0  # too few rows to compare


def _prompt_geometry(model: torch.nn.Module, tokenizer: object) -> torch.Tensor:
    model.eval()
    prompts = embed(model, tokenizer, as_user([p for t in TASKS for p in PROMPTS[t["name"]]]))
    return prompts @ prompts.T


def test_distillation_keeps_the_starting_geometry_and_resumes(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, data = tiny
    cfg = config(checkpoint, max_steps=12, eval_every=4, keep_best=False)
    start, tokenizer = build_model(cfg)
    before = _prompt_geometry(start, tokenizer)
    with pytest.raises(ValueError, match="--no-dropout"):
        train(replace(cfg, distill=1.0), [load_dataset_dir(data)])
    cfg = replace(cfg, dropout=False)  # the teacher runs without dropout, so the student does too
    free, _, _ = train(cfg, [load_dataset_dir(data)])
    held, _, _ = train(replace(cfg, distill=20.0), [load_dataset_dir(data)])
    drift_free = (_prompt_geometry(free, tokenizer) - before).abs().mean().item()
    drift_held = (_prompt_geometry(held, tokenizer) - before).abs().mean().item()
    assert drift_held < 0.7 * drift_free, (drift_held, drift_free)
    # Resumable like any run: the teacher is the starting model, rebuilt before the resume point.
    run = tmp_path / "run"
    train(replace(cfg, distill=20.0, stop_after=6), [load_dataset_dir(data)], run_dir=run)
    resumed, _, _ = train(replace(cfg, distill=20.0), [load_dataset_dir(data)], run_dir=run)
    for (name, a), (_, b) in zip(held.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # A resume point written before a setting existed continues when the setting is at its default.
    old = tmp_path / "old"
    train(replace(cfg, dropout=True, stop_after=6), [load_dataset_dir(data)], run_dir=old)
    saved = torch.load(old / "resume.pt", weights_only=False)
    for added in ("distill", "dropout"):
        del saved["config"][added]
    torch.save(saved, old / "resume.pt")
    with pytest.raises(ValueError, match="other settings"):  # that run trained with dropout
        train(cfg, [load_dataset_dir(data)], run_dir=old)
    again, _, _ = train(replace(cfg, dropout=True), [load_dataset_dir(data)], run_dir=old)
    whole, _, _ = train(replace(cfg, dropout=True), [load_dataset_dir(data)])
    for (name, a), (_, b) in zip(whole.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_set_weights_scale_a_taxonomys_share_of_batches(tiny: tuple[Path, Path]) -> None:
    checkpoint, data = tiny
    first = load_dataset_dir(data)
    sets = [first, replace(first, name="twin")]
    _, tokenizer, _ = load_checkpoint(checkpoint)
    hard = [[[] for _ in first.tasks] for _ in sets]
    even = _Sampler(sets, tokenizer, config(checkpoint), random.Random(0), hard)
    tilted = _Sampler(sets, tokenizer, config(checkpoint, set_weights="twin=3"), random.Random(0), hard)
    assert even.weights == pytest.approx([0.5, 0.5])
    assert tilted.weights == pytest.approx([0.25, 0.75])
    assert parse_set_weights(" a=2, b=0.5 ", ["a", "b"]) == {"a": 2.0, "b": 0.5}
    for bad in ("c=2", "a", "a=0", "a=-1", "a=x"):
        with pytest.raises(ValueError, match="set_weights"):
            parse_set_weights(bad, ["a", "b"])
