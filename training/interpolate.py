"""Weight-space interpolation between the base encoder and a trained general checkpoint.

Fine-tuning on many taxonomies moves the model towards them; interpolating the weights back
towards the zero-shot base (WiSE-FT, Wortsman et al. 2022) keeps much of the gain on the
training distribution while recovering the base's robustness on distributions it never saw. With
the pretrained weights frozen and experts whose corrections are low-rank products A @ B that start
at zero, interpolating every weight by `alpha` is exactly scaling each B by `alpha`: the served
model is the same size and speed, only the corrections are shorter. Gates are kept as trained
(they only choose which corrections apply). Choose `alpha` on held-out families (training/lofo.py
`interpolate`), never on the training sets.
"""

from __future__ import annotations

import torch

from models import TaskClassifier


@torch.no_grad()
def scale_experts(model: TaskClassifier, alpha: float) -> TaskClassifier:
    """Scale every expert correction by `alpha` in place (0: the base encoder, 1: as trained)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be between 0 (the base) and 1 (as trained)")
    if not model.moe_layers:
        raise ValueError("the model has no experts to interpolate")
    for moe in model.moe_layers:
        moe.experts.b_up.mul_(alpha)
        moe.experts.b_down.mul_(alpha)
    return model
