"""The evaluation report: JSON for machines, Markdown with plots for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(report: dict[str, Any], path: Path, max_labels: int = 80) -> None:
    labels = report["labels"]
    matrix = np.array(report["confusion"], dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    if len(labels) > max_labels:  # keep the most confused labels readable
        worst = np.argsort(np.diag(normalised))[:max_labels]
        labels = [labels[i] for i in worst]
        normalised = normalised[np.ix_(worst, worst)]
    size = max(6.0, 0.18 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6 if len(labels) > 30 else 9)
    ax.set_yticks(range(len(labels)), labels, fontsize=6 if len(labels) > 30 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion (row-normalised), {report['taxonomy']} {report['split']}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(report: dict[str, Any], path: Path) -> None:
    table = report["reliability"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    if table:
        mids = [(lo + hi) / 2 for lo, hi, *_ in table]
        widths = [hi - lo for lo, hi, *_ in table]
        accuracy = [row[4] for row in table]
        ax.bar(mids, accuracy, width=widths, edgecolor="black", alpha=0.7, label="accuracy in bin")
        ax.plot([row[3] for row in table], accuracy, "o", color="darkred", label="mean confidence")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability, ECE {report['ece']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(report: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_confusion(report, out / "confusion.png")
    plot_reliability(report, out / "reliability.png")
    keys = [
        "accuracy",
        "closed_set_accuracy",
        "in_scope_accuracy",
        "macro_f1",
        "ece",
        "fallback_precision",
        "fallback_recall",
        "fallback_auroc",
        "threshold",
        "rows",
    ]
    lines = [
        f"# Evaluation: {report['taxonomy']} ({report['split']} split)",
        "",
        f"Checkpoint `{report['checkpoint']}`, {report['shots']} examples per task, threshold from "
        f"{report['threshold_source']}.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(report[k])} |" for k in keys if report.get(k) is not None],
        "",
        "![confusion matrix](confusion.png)",
        "",
        "![reliability diagram](reliability.png)",
        "",
        "## Most confused pairs",
        "",
        "| true | predicted | count |",
        "|---|---|---|",
    ]
    matrix = np.array(report["confusion"])
    np.fill_diagonal(matrix, 0)
    for flat in np.argsort(matrix, axis=None)[::-1][:15]:
        i, j = np.unravel_index(flat, matrix.shape)
        if matrix[i, j] == 0:
            break
        lines.append(f"| {report['labels'][i]} | {report['labels'][j]} | {matrix[i, j]} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out
