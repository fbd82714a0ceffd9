"""Weight-space interpolation between the base encoder and a trained checkpoint.

Fine-tuning on many taxonomies moves the model towards them; interpolating the weights back
towards the zero-shot base (WiSE-FT, Wortsman et al. 2022) keeps much of the gain on the
training distribution while recovering the base's robustness on distributions it never saw.
Every pretrained weight moves to base + alpha * (trained - base). The experts' corrections are
low-rank products A @ B that start at zero (the base has none), so for them the interpolation is
exactly scaling each B by alpha. Gates are kept as trained (they only choose which corrections
apply). The served model keeps its size and speed. Choose `alpha` on held-out families
(training/lofo.py `interpolate`), never on the training sets.
"""

from __future__ import annotations

import torch

from models import TaskClassifier
from models.checkpoint import base_state


@torch.no_grad()
def towards_base(model: TaskClassifier, alpha: float) -> TaskClassifier:
    """Move `model` in place to base + alpha * (model - base) (0: the base encoder, 1: as trained)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be between 0 (the base) and 1 (as trained)")
    base = base_state(model.config.encoder)
    for name, value in model.state_dict().items():
        if name in base and value.is_floating_point() and not torch.equal(value, base[name]):
            value.copy_(base[name].to(value) + alpha * (value - base[name].to(value)))
    for moe in model.moe_layers:
        moe.experts.b_up.mul_(alpha)
        moe.experts.b_down.mul_(alpha)
    return model
