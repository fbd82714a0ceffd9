"""The no-match criteria and per-router threshold fitting, on hand-made unit vectors."""

from __future__ import annotations

import numpy as np
import pytest

from models.nomatch import (
    CALIBRATED,
    SIMILARITY,
    background_prompts,
    calibrate,
    criterion_value,
    decide_batch,
    fit_threshold,
)

DIM = 16


def unit(
    rng: np.random.Generator, n: int, around: np.ndarray | None = None, spread: float = 1.0
) -> np.ndarray:
    x = rng.normal(size=(n, DIM)) * spread
    if around is not None:
        x = x + around
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_calibrated_value_is_a_z_score_of_the_best_similarity_against_the_background() -> None:
    rng = np.random.default_rng(0)
    protos = unit(rng, 3)
    background = unit(rng, 400)
    cal = calibrate(protos, background)
    best = (background @ protos.T).max(axis=1)
    assert (cal.mean, cal.std) == (pytest.approx(best.mean()), pytest.approx(best.std()))
    sims = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.5]], dtype=np.float32)
    index, value = decide_batch(sims, CALIBRATED, cal)
    assert list(index) == [0, 2]
    assert list(value) == pytest.approx([(0.9 - cal.mean) / cal.std, (0.5 - cal.mean) / cal.std])
    assert cal.similarity_cut(1.5) == pytest.approx(cal.mean + 1.5 * cal.std)
    assert list(criterion_value(sims, index, SIMILARITY, cal)) == pytest.approx([0.9, 0.5])
    with pytest.raises(ValueError, match="calibrated, similarity"):
        criterion_value(sims, index, "margin", cal)


def test_calibration_asks_more_of_a_router_that_unrelated_prompts_match_well() -> None:
    """Descriptions close to everything (broad, or many tasks) lift what random traffic finds: the
    same raw similarity is worth less there. Within one router the order is the raw one."""
    rng = np.random.default_rng(1)
    background = unit(rng, 400, around=np.ones(DIM) * 0.3)
    broad = calibrate(np.ones((1, DIM), np.float32) / np.sqrt(DIM), background)
    narrow = calibrate(unit(rng, 1), background)
    assert broad.mean > narrow.mean
    same = np.array([[0.6]], dtype=np.float32)
    assert decide_batch(same, CALIBRATED, broad)[1][0] < decide_batch(same, CALIBRATED, narrow)[1][0]
    sims = rng.uniform(-1, 1, size=(50, 4)).astype(np.float32)
    order_raw = np.argsort(decide_batch(sims, SIMILARITY, narrow)[1])
    assert list(np.argsort(decide_batch(sims, CALIBRATED, narrow)[1])) == list(order_raw)


def _router(rng: np.random.Generator, tasks: int = 3, per_task: int = 8):
    centres = unit(rng, tasks) * 3
    examples = [unit(rng, per_task, around=c, spread=0.4) for c in centres]
    descriptions = unit(rng, tasks, around=centres, spread=0.3)
    background = unit(rng, 300)
    return descriptions, examples, background


@pytest.mark.parametrize("criterion", [CALIBRATED, SIMILARITY])
def test_fit_with_both_kinds_separates_them_and_reports_what_it_expects(criterion: str) -> None:
    rng = np.random.default_rng(2)
    descriptions, examples, background = _router(rng)
    fallback = unit(rng, 12)  # unrelated prompts
    fit = fit_threshold(descriptions, examples, fallback, background, criterion, 0.0, 0.25)
    assert (fit.examples, fit.fallback_examples) == (24, 12)
    assert fit.fallback_recall == 1.0 and fit.fallback_precision == 1.0
    # An explicit default plays no part when both kinds are there.
    again = fit_threshold(descriptions, examples, fallback, background, criterion, 0.9, 0.25)
    assert again.threshold == fit.threshold


def test_fit_with_examples_only_never_raises_the_default() -> None:
    rng = np.random.default_rng(3)
    descriptions, examples, background = _router(rng)
    fit = fit_threshold(
        descriptions, examples, np.zeros((0, DIM), np.float32), background, CALIBRATED, 3.0, 0.25
    )
    assert fit.threshold <= 3.0 and fit.fallback_precision is None and fit.fallback_recall is None


def test_fit_with_fallback_examples_only_catches_most_of_them_and_never_lowers_the_default() -> None:
    rng = np.random.default_rng(4)
    descriptions, _, background = _router(rng)
    fallback = unit(rng, 20)
    empty = [np.zeros((0, DIM), np.float32)] * 3
    fit = fit_threshold(descriptions, empty, fallback, background, SIMILARITY, -1.0, 0.25)
    sims = (fallback @ descriptions.T).max(axis=1)
    assert (sims < fit.threshold).mean() == pytest.approx(0.7, abs=0.051) and fit.fallback_recall >= 0.65
    high = fit_threshold(descriptions, empty, fallback, background, SIMILARITY, 0.9, 0.25)
    assert high.threshold == 0.9 and high.fallback_recall == 1.0


def test_nothing_to_fit_keeps_the_default() -> None:
    rng = np.random.default_rng(5)
    descriptions, _, background = _router(rng)
    empty = [np.zeros((0, DIM), np.float32)] * 3
    fit = fit_threshold(
        descriptions, empty, np.zeros((0, DIM), np.float32), background, CALIBRATED, 2.5, 0.25
    )
    assert fit.threshold == 2.5 and fit.examples == 0


def test_the_background_corpus_is_broad_and_clean() -> None:
    prompts = background_prompts()
    assert len(prompts) >= 400 and len(set(prompts)) == len(prompts)
    assert all(p.strip() == p and p for p in prompts)


def test_the_sorted_sweep_finds_what_a_brute_force_sweep_finds() -> None:
    from models.nomatch import _IN_SCOPE_WEIGHT, _balanced_best

    rng = np.random.default_rng(6)
    for _ in range(20):
        pos, neg = rng.normal(1.0, 1.0, 40), rng.normal(-0.5, 1.0, 25)
        right = rng.random(40) > 0.2
        values = np.unique(np.concatenate([pos, neg]))
        candidates = np.concatenate([[values[0] - 1e-3], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-3]])
        scores = [
            (_IN_SCOPE_WEIGHT * ((pos >= c) & right).mean() + (neg < c).mean()) / (_IN_SCOPE_WEIGHT + 1)
            for c in candidates
        ]
        expected = candidates[int(np.flatnonzero(np.array(scores) >= max(scores) - 1e-9)[0])]
        assert _balanced_best(pos, right, neg) == pytest.approx(expected)


def test_the_checkpoint_default_differs_for_routers_with_examples() -> None:
    from models import ClassifierConfig

    cfg = ClassifierConfig(calibrated_threshold=0.8, calibrated_threshold_examples=1.0, threshold=0.2)
    assert cfg.default_threshold("calibrated") == 0.8
    assert cfg.default_threshold("calibrated", examples=True) == 1.0
    assert cfg.default_threshold("similarity", examples=True) == 0.2  # unset: the same as without
    assert ClassifierConfig().default_threshold("calibrated", examples=True) == 0.9
