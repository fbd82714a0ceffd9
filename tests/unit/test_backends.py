"""The fast CPU paths give the reference path's answers: ONNX fp32 to float precision, ONNX int8 within a
stated tolerance of scores and of accuracy on a real labelled set. Real weights (the shipped checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models import DEFAULT_CHECKPOINT, ChatMessage, load_checkpoint, pad_batch
from models.onnx_export import cached_export
from server.classify.engine import Engine, TaskText, length_groups, pick_backend
from server.config import ModelSection
from server.routing.spec import load_router_dir
from server.targets import load_catalog
from tests.conftest import DATA, INT8_BATCH_MATES_TOLERANCE
from training.data import SHARED_DATA, load_taxonomies

# int8 MatMuls move a cosine similarity by about 0.01 on average; the largest move seen over 4700
# shared-set prompts was 0.071 (loadtests/bench_backends.py).
INT8_SCORE_TOLERANCE = 0.08
# On 300 real prompts, int8 accuracy stays within this many points of torch (the full evaluation in
# loadtests/README.md moves it by -0.8 to +1.2 points per shared set: borderline flips, either way).
INT8_ACCURACY_POINTS = 1.5


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# What the root logger heard at INFO while the engines below exported (and int8-quantised) ONNX.
EXPORT_LOG = _Records()


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Engine]:
    cache = tmp_path_factory.mktemp("onnx")
    root = logging.getLogger()
    level = root.level
    root.addHandler(EXPORT_LOG)
    root.setLevel(logging.INFO)  # as the service runs
    try:
        return {
            backend: Engine.load(ModelSection(device="cpu", backend=backend, onnx_cache_dir=cache))
            for backend in ("torch", "onnx", "onnx-int8")
        }
    finally:
        root.removeHandler(EXPORT_LOG)
        root.setLevel(level)


def test_the_int8_export_does_not_flood_the_log(engines: dict[str, Engine]) -> None:
    """onnxruntime's quantiser logs ~150 INFO lines on the root logger; a first start printed them all."""
    noisy = [r.getMessage() for r in EXPORT_LOG.records if r.name == "root"]
    assert noisy == [], noisy[:5]


def router_scores(engine: Engine) -> np.ndarray:
    """Scores of every default-router test prompt against its router's real task descriptions."""
    from server.config import DEFAULTS_DIR

    catalog = load_catalog(DEFAULTS_DIR / "catalog.yaml")
    specs = {s.name: s for s in load_router_dir(DEFAULTS_DIR / "routers", catalog)}
    prompts = yaml.safe_load((DATA / "default_router_prompts.yaml").read_text())
    rows = []
    for router, by_task in prompts.items():
        proto = engine.task_prototypes([TaskText(t.description, t.examples) for t in specs[router].tasks])
        texts = [p for ps in by_task.values() for p in ps]
        inputs = [engine.prepare([ChatMessage("user", t)]) for t in texts]
        rows += [np.pad(s, (0, 8 - len(s))) for s in engine.score(inputs, [proto] * len(inputs))]
    return np.stack(rows)


def test_onnx_fp32_is_the_reference_path(engines: dict[str, Engine]) -> None:
    assert engines["onnx"].backend == "onnx" and engines["onnx"].onnx is not None
    np.testing.assert_allclose(router_scores(engines["onnx"]), router_scores(engines["torch"]), atol=1e-4)


def test_onnx_int8_scores_stay_within_tolerance(engines: dict[str, Engine]) -> None:
    reference, fast = router_scores(engines["torch"]), router_scores(engines["onnx-int8"])
    assert np.abs(fast - reference).max() < INT8_SCORE_TOLERANCE
    assert (fast.argmax(1) == reference.argmax(1)).mean() >= 0.95


def test_onnx_handles_any_batch_and_length(engines: dict[str, Engine]) -> None:
    """The export traced one shape; a padded batch of mixed lengths must give each row's lone answer,
    in int8 too: activations are quantised per token, so batch mates cannot change a row's rounding
    (with onnxruntime's per-tensor scales they moved a score by up to 0.099)."""
    texts = ["hi", "book me a flight to Paris next Tuesday morning please " * 12, "my code crashes"]
    for backend, tolerance in (("onnx", 1e-4), ("onnx-int8", INT8_BATCH_MATES_TOLERANCE)):
        engine = engines[backend]
        proto = engine.task_prototypes([TaskText("book a flight"), TaskText("fix my code")])
        inputs = [engine.prepare([ChatMessage("user", t)]) for t in texts]
        together = engine.score(inputs, [proto] * 3)
        for prompt, batched in zip(inputs, together, strict=True):
            np.testing.assert_allclose(engine.score([prompt], [proto])[0], batched, atol=tolerance)


@pytest.mark.skipif(not (SHARED_DATA / "snips").is_dir(), reason="needs ../shared/data")
def test_onnx_int8_keeps_accuracy_on_a_shared_set(engines: dict[str, Engine]) -> None:
    (snips,) = load_taxonomies(["snips"])
    rows = snips.rows("test", with_fallback=False)[:300]
    truth = np.array([snips.task_names.index(r.label) for r in rows])
    accuracy = {}
    for backend in ("torch", "onnx-int8"):
        engine = engines[backend]
        proto = engine.task_prototypes([TaskText(t.description) for t in snips.tasks])
        inputs = [engine.prepare(list(r.messages)) for r in rows]
        scores = np.stack(
            [s for i in range(0, 300, 50) for s in engine.score(inputs[i : i + 50], [proto] * 50)]
        )
        accuracy[backend] = float((scores.argmax(1) == truth).mean())
    assert accuracy["torch"] > 0.5  # the reference itself works, so the comparison means something
    assert abs(accuracy["onnx-int8"] - accuracy["torch"]) * 100 <= INT8_ACCURACY_POINTS


def test_export_is_cached_by_weights(tmp_path: Path) -> None:
    model, _, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    first = cached_export(model, "fp32", tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cached_export(model, "fp32", tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]  # no staging left behind
    with torch.no_grad():
        model.moe_layers[0].gate.weight.add_(0.01)
    assert cached_export(model, "fp32", tmp_path) != first  # changed weights never reuse a stale file


def test_backend_choice() -> None:
    assert pick_backend("auto", torch.device("cpu")) == "onnx-int8"
    assert pick_backend("auto", torch.device("cuda")) == "torch"
    assert pick_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="runs on CPU only"):
        pick_backend("onnx-int8", torch.device("cuda"))


def test_length_groups_put_each_prompt_in_its_padding_bucket() -> None:
    assert length_groups([5, 300, 20, 17, 16]) == [[0, 4], [2, 3], [1]]
    assert length_groups([40, 33]) == [[0, 1]]


def test_a_mixed_length_batch_gives_each_prompt_its_lone_answer(engines: dict[str, Engine]) -> None:
    """Grouping by length must not change any score: the torch path to float precision."""
    engine = engines["torch"]
    proto = engine.task_prototypes([TaskText("book a flight"), TaskText("fix my code")])
    texts = ["hi", "book me a flight to Paris next Tuesday morning please " * 12, "my code crashes", "ok"]
    inputs = [engine.prepare([ChatMessage("user", t)]) for t in texts]
    assert len(length_groups([len(p.input_ids) for p in inputs])) == 2
    together = engine.score(inputs, [proto] * len(inputs))
    for prompt, batched in zip(inputs, together, strict=True):
        np.testing.assert_allclose(engine.score([prompt], [proto])[0], batched, atol=1e-5)


def test_the_static_graph_is_the_model(engines: dict[str, Engine]) -> None:
    """What ONNX export and CUDA graphs capture (eager attention, padding through the experts, no
    statistics) gives the serving path's embeddings."""
    engine = engines["torch"]
    inputs = [engine.prepare([ChatMessage("user", t)]).input_ids for t in ("hi there", "fix my code " * 9)]
    ids, mask = pad_batch(inputs, engine.pad_id)
    with torch.inference_mode():
        reference = engine.model.encode_prompts(ids, mask)
        with engine.model.static_graph():
            static = engine.model.encoder(ids, mask)
    torch.testing.assert_close(static, reference, atol=1e-5, rtol=1e-4)
    assert all(moe.record_stats for moe in engine.model.moe_layers)  # restored afterwards


def test_an_unwritable_cache_still_exports(tmp_path: Path) -> None:
    """A container user without a writable home still gets the fast path, exported to a temp dir."""
    model, _, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    path = cached_export(model, "fp32", not_a_dir)
    assert path.is_file() and not path.is_relative_to(tmp_path)


def test_auto_falls_back_to_torch_when_the_export_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection (the exporter is replaced by one that raises: no real checkpoint makes it fail
    today): 'auto' serves on torch; a named ONNX backend refuses to start and says why."""

    def broken(*_: object, **__: object) -> Path:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr("server.classify.engine.cached_export", broken)
    assert Engine.load(ModelSection(device="cpu", backend="auto")).backend == "torch"
    with pytest.raises(ValueError, match="model.backend='onnx-int8': the ONNX export failed: unsupported"):
        Engine.load(ModelSection(device="cpu", backend="onnx-int8"))
