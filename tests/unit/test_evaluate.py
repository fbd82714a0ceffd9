"""Evaluation metrics and threshold choice on hand-made similarities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.evaluate import Scored, metrics, pick_threshold
from training.report import write_report

TASKS = ["a", "b"]


def scored(rows: list[tuple[float, float, str]]) -> Scored:
    return Scored(
        np.array([[x, y] for x, y, _ in rows], dtype=np.float32), [label for *_, label in rows], TASKS
    )


def test_threshold_with_fallback_rows_separates_them() -> None:
    val = scored(
        [(0.8, 0.1, "a"), (0.2, 0.7, "b"), (0.6, 0.3, "a"), (0.3, 0.2, "fallback"), (0.1, 0.35, "fallback")]
    )
    threshold, how = pick_threshold([val])
    assert threshold == pytest.approx((0.35 + 0.6) / 2) and "fallback" in how


def test_threshold_without_fallback_keeps_most_in_scope() -> None:
    rng = np.random.default_rng(0)
    val = Scored(rng.uniform(0.2, 0.9, size=(500, 2)).astype(np.float32), ["a"] * 500, TASKS)
    threshold, how = pick_threshold([val])
    assert np.mean(val.best()[0] >= threshold) == pytest.approx(0.98, abs=0.005) and "98%" in how


def test_metrics_and_report(tmp_path: Path) -> None:
    test = scored(
        [(0.8, 0.1, "a"), (0.2, 0.7, "b"), (0.6, 0.65, "a"), (0.3, 0.2, "fallback"), (0.5, 0.1, "fallback")]
    )
    report = metrics(test, threshold=0.4, temperature=0.05)
    assert report["accuracy"] == pytest.approx(3 / 5)  # the a->b confusion and one fallback matched
    assert report["closed_set_accuracy"] == pytest.approx(2 / 3)
    assert report["fallback_precision"] == 1.0 and report["fallback_recall"] == 0.5
    assert report["fallback_auroc"] == 1.0  # every fallback row scores below every in-scope row
    assert 0 <= report["ece"] <= 1 and report["confusion"][0][1] == 1
    report |= {"taxonomy": "toy", "split": "test", "checkpoint": "x", "shots": 0, "threshold_source": "test"}
    out = write_report(report, tmp_path)
    text = (out / "report.md").read_text()
    assert "| accuracy | 0.6000 |" in text and "| a | b | 1 |" in text
    assert (out / "confusion.png").stat().st_size > 1000


def _rows(in_scope: list[float], wrong: list[float], fallback: list[float]) -> tuple:
    """Similarities [N, 2] whose best value is each given number: in-scope rows on their task (a),
    in-scope rows on the wrong task, fallback rows; with the raw similarity as the criterion."""
    sims, labels = [], []
    for v in in_scope:
        sims.append([v, v - 0.5]), labels.append("a")
    for v in wrong:
        sims.append([v - 0.5, v]), labels.append("a")
    for v in fallback:
        sims.append([v, v - 0.5]), labels.append("fallback")
    return np.array(sims), labels


def test_bar_range_is_where_recall_and_in_scope_loss_both_hold() -> None:
    from models.nomatch import Calibration
    from training.openset import bar_range

    cal = Calibration(0.0, 1.0)
    # 100 correct in-scope rows at 0.500, 0.505 .. 0.995, 20 fallback rows at 0.30, 0.31 .. 0.49.
    correct = [0.50 + i / 200 for i in range(100)]
    sims, labels = _rows(correct, [], [0.30 + i / 100 for i in range(20)])
    low, high = bar_range(sims, labels, ["a", "b"], "similarity", cal)
    assert low == pytest.approx(0.46, abs=1e-4)  # recall 0.85: 17 of the 20 (up to 0.46) below it
    assert high == pytest.approx(0.51, abs=1e-4)  # 3 of 100 correct rows may be lost, not 4
    # Wrong in-scope rows cost nothing when they fall back: closed-set accuracy never counted them.
    sims, labels = _rows(correct, [0.95] * 10, [0.30 + i / 100 for i in range(20)])
    assert bar_range(sims, labels, ["a", "b"], "similarity", cal) is not None
    # Fallback rows above every in-scope row: no threshold meets the bar.
    sims, labels = _rows(correct, [], [1.5] * 20)
    assert bar_range(sims, labels, ["a", "b"], "similarity", cal) is None
    # No fallback rows: nothing to measure.
    sims, labels = _rows(correct, [], [])
    assert bar_range(sims, labels, ["a", "b"], "similarity", cal) is None
