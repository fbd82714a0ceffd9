"""Checkpoint format and scoring math on the real packaged encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import (
    DEFAULT_CHECKPOINT,
    PLAIN_CHECKPOINT,
    TaskClassifier,
    load_checkpoint,
    match_probabilities,
    save_checkpoint,
)
from models.checkpoint import WEIGHTS_FILE


@pytest.fixture(scope="module")
def shipped() -> tuple[TaskClassifier, object, dict]:
    return load_checkpoint(DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def plain() -> tuple[TaskClassifier, object, dict]:
    """The base encoder as is: saved differences are relative to exactly these weights."""
    return load_checkpoint(PLAIN_CHECKPOINT)


def test_shipped_checkpoint_loads_with_metadata(shipped: tuple[TaskClassifier, object, dict]) -> None:
    model, tokenizer, metadata = shipped
    assert model.dim == 384 and metadata["name"] == "minilm-moe-broad" and model.moe_layers
    batch = tokenizer(["reset my password", "fix this stack trace"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        emb = model.encode_prompts(batch["input_ids"], batch["attention_mask"])
    assert emb.shape == (2, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_round_trip_stores_only_changed_tensors_bit_exactly(
    plain: tuple[TaskClassifier, object, dict], tmp_path: Path
) -> None:
    model, _, _ = plain
    base = {k: v.clone() for k, v in model.state_dict().items()}
    changed = "encoder.transformer.pooler.dense.bias"
    with torch.no_grad():
        model.state_dict()[changed].add_(torch.randn_like(base[changed]))
    try:
        save_checkpoint(model, tmp_path, {"note": "test"}, base_state=base)
        from safetensors.torch import load_file

        assert list(load_file(str(tmp_path / WEIGHTS_FILE))) == [changed]
        reloaded, _, metadata = load_checkpoint(tmp_path)
        assert metadata == {"note": "test"}
        for key, value in model.state_dict().items():
            assert torch.equal(reloaded.state_dict()[key], value), key
    finally:
        model.load_state_dict(base)


def test_half_precision_differences_restore_changed_weights_closely(
    plain: tuple[TaskClassifier, object, dict], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    model, _, _ = plain
    base = {k: v.clone() for k, v in model.state_dict().items()}
    changed = "encoder.transformer.encoder.layer.5.output.dense.weight"
    with torch.no_grad():
        model.state_dict()[changed].add_(0.01 * torch.randn_like(base[changed]))
    try:
        save_checkpoint(model, tmp_path, base_state=base, delta_dtype=torch.float16)
        stored = load_file(str(tmp_path / WEIGHTS_FILE))
        assert list(stored) == [changed + ".delta"] and stored[changed + ".delta"].dtype == torch.float16
        restored = load_checkpoint(tmp_path)[0].state_dict()[changed]
        change = model.state_dict()[changed] - base[changed]
        assert (restored - model.state_dict()[changed]).abs().max() <= 1e-3 * change.abs().max()
    finally:
        model.load_state_dict(base)


def test_probabilities_sum_to_one_and_agree_with_the_threshold() -> None:
    sims = np.array([[0.50, 0.10, 0.05], [0.12, 0.11, -0.2]], dtype=np.float32)
    probs, fallback = match_probabilities(sims, threshold=0.15, temperature=0.05)
    assert np.allclose(probs.sum(1) + fallback, np.ones(2))
    assert probs[0].argmax() == 0 and probs[0, 0] > fallback[0]  # best 0.50 >= 0.15: matched
    assert fallback[1] > probs[1].max()  # best 0.12 < 0.15: fallback is the most probable


def test_prototypes_mix_description_and_examples(shipped: tuple[TaskClassifier, object, dict]) -> None:
    model, _, _ = shipped
    description = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]]), dim=-1)
    examples = [torch.tensor([[0.0, 1.0], [0.0, 1.0]])]
    proto = model.task_prototypes(description, examples)
    w = model.config.description_weight
    expected = torch.nn.functional.normalize(torch.tensor([[w, 1 - w]]), dim=-1)
    assert torch.allclose(proto, expected)
    assert torch.equal(model.task_prototypes(description, [None]), description)


def test_encoder_sources_packaged_local_path_and_hub_name(tmp_path: Path) -> None:
    from models.encoder import load_encoder, resolve_encoder_source

    packaged = resolve_encoder_source("packaged:all-MiniLM-L6-v2")
    assert Path(packaged, "config.json").is_file()
    encoder, tokenizer = load_encoder(packaged)  # a plain local directory loads the same way
    assert encoder.dim == 384 and tokenizer("hi")["input_ids"]
    assert (
        resolve_encoder_source("sentence-transformers/all-MiniLM-L6-v2")
        == "sentence-transformers/all-MiniLM-L6-v2"
    )
    with pytest.raises(ValueError, match="unknown packaged encoder 'nope'; known: all-MiniLM-L6-v2"):
        resolve_encoder_source("packaged:nope")
    with pytest.raises(ValueError, match="is not a checkpoint"):
        load_checkpoint(tmp_path)
