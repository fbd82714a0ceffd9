"""TaskVectors: prototypes alone, or with a retrained checkpoint's learned examples (nearest one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import TaskVectors
from models.nomatch import calibrate


def _unit(rows: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=-1)


def test_without_learned_examples_the_score_is_the_prototype_cosine() -> None:
    prototypes, prompts = _unit(3), _unit(5, seed=1)
    vectors = TaskVectors.build(prototypes, [None, None, None], weight=0.5)
    assert not vectors.has_neighbours and len(vectors) == 3
    torch.testing.assert_close(vectors.similarity(prompts), prompts @ prototypes.T)
    # A weight of 0 keeps the prototypes alone even when examples are given.
    assert not TaskVectors.build(prototypes, [_unit(2), None, None], weight=0.0).has_neighbours


def test_a_task_with_learned_examples_mixes_in_its_nearest_one() -> None:
    prototypes, prompts = _unit(3), _unit(6, seed=1)
    learned = [_unit(4, seed=2), None, _unit(2, seed=3)]
    vectors = TaskVectors.build(prototypes, learned, weight=0.3)
    got = vectors.similarity(prompts)
    plain = prompts @ prototypes.T
    for task, examples in enumerate(learned):
        if examples is None:
            expected = plain[:, task]
        else:
            expected = 0.7 * plain[:, task] + 0.3 * (prompts @ examples.T).max(dim=1).values
        torch.testing.assert_close(got[:, task], expected)
    # Rows are scored independently: alone or in a batch, the same numbers.
    torch.testing.assert_close(vectors.similarity(prompts[2:3]), got[2:3])
    np.testing.assert_allclose(vectors.similarity_np(prompts.numpy()), got.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="2 learned-example entries for 3 tasks"):
        TaskVectors.build(prototypes, learned[:2], weight=0.3)


def test_calibration_scores_the_background_the_way_prompts_are_scored() -> None:
    prototypes, background = _unit(3), _unit(50, seed=4)
    vectors = TaskVectors.build(prototypes, [_unit(5, seed=5), None, None], weight=0.5)
    best = vectors.similarity(background).max(dim=1).values.numpy()
    cal = calibrate(vectors, background.numpy())
    assert cal.mean == pytest.approx(float(best.mean()), abs=1e-6)
    plain, wrapped = (
        calibrate(prototypes.numpy(), background.numpy()),
        calibrate(TaskVectors(prototypes), background.numpy()),
    )
    assert (plain.mean, plain.std) == pytest.approx((wrapped.mean, wrapped.std), abs=1e-6)
