"""CUDA: the engine in float16 gives the CPU's answers. Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch
import yaml

from models import ChatMessage
from server.classify.engine import Engine, TaskText
from server.config import ModelSection
from tests.conftest import DATA

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_half_precision_matches_cpu() -> None:
    prompts = yaml.safe_load((DATA / "default_router_prompts.yaml").read_text())["coding-agent"]
    tasks = [TaskText(t) for t in ("fix a bug", "design a system", "rename a variable", "explain the code")]
    texts = [p for ps in prompts.values() for p in ps]
    results = {}
    for device in ("cpu", "cuda"):
        engine = Engine.load(ModelSection(device=device, backend="torch"))
        assert engine.dtype == (torch.float16 if device == "cuda" else torch.float32)
        engine.warmup()
        proto = engine.task_prototypes(tasks)
        inputs = [engine.prepare([ChatMessage("user", t)]) for t in texts]
        results[device] = engine.score(inputs, [proto] * len(inputs))
    for cpu, cuda in zip(results["cpu"], results["cuda"], strict=True):
        assert cpu.argmax() == cuda.argmax() or abs(cpu.max() - cuda[cpu.argmax()]) < 5e-3
        assert abs(cpu - cuda).max() < 1e-2


def test_cuda_graphs_give_the_eager_answers() -> None:
    """Every bucket is captured at warm-up; replays of padded shapes match the eager encoder."""
    engine = Engine.load(ModelSection(device="cuda", cuda_graphs=True), max_batch=8)
    engine.warmup()
    assert engine.graphs is not None, "capture failed (see the warning in the log)"
    proto = engine.task_prototypes([TaskText("fix a bug"), TaskText("book a flight")])
    texts = ["hi", "my code crashes with a null pointer " * 5, "book a flight to Rome " * 20]
    inputs = [engine.prepare([ChatMessage("user", t)]) for t in texts]
    graphed = engine.score(inputs, [proto] * 3)
    engine.graphs = None
    eager = engine.score(inputs, [proto] * 3)
    for a, b in zip(graphed, eager, strict=True):
        assert abs(a - b).max() < 1e-2
