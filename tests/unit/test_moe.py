"""The mixture-of-experts layer: top-k routing, balancing loss, identity at initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.moe import MoEFeedForward


def make_moe(num_experts: int = 4, top_k: int = 2, dim: int = 16, hidden: int = 32) -> MoEFeedForward:
    torch.manual_seed(0)
    return MoEFeedForward(
        nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.functional.gelu, num_experts, top_k, 4
    )


def test_each_token_goes_to_exactly_top_k_experts() -> None:
    moe = make_moe()
    moe.gate.weight.data.normal_(std=1.0)  # a decisive gate
    x = torch.randn(3, 5, 16)
    moe(x)
    assert moe.last_counts is not None
    assert moe.last_counts.sum().item() == 3 * 5 * 2  # 15 tokens x top-2
    assert (moe.last_counts > 0).sum() >= 2


def test_padding_is_not_routed() -> None:
    moe = make_moe()
    x = torch.randn(2, 4, 16)
    moe.token_mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    out = moe(x)
    assert moe.last_counts.sum().item() == 4 * 2
    assert torch.equal(out[0, 3], torch.zeros(16)) and torch.equal(out[1, 1:], torch.zeros(3, 16))


def test_starts_as_the_pretrained_ffn_and_experts_diverge_with_their_own_weights() -> None:
    moe = make_moe()
    x = torch.randn(2, 6, 16)
    dense = moe.down(nn.functional.gelu(moe.dense(x)))
    assert torch.allclose(moe(x), dense, atol=1e-6)  # B = 0: every expert is the FFN
    with torch.no_grad():
        moe.experts.b_up[1].normal_()
    assert not torch.allclose(moe(x), dense, atol=1e-4)


def test_balancing_loss_is_finite_positive_and_smallest_when_balanced() -> None:
    moe = make_moe(num_experts=4, top_k=1)
    moe.train()
    x = torch.randn(64, 16)
    moe(x)
    balanced = moe.aux_losses[-1]
    assert torch.isfinite(balanced) and balanced > 0
    with torch.no_grad():  # a gate that sends every token to expert 0
        moe.gate.weight.zero_()
        moe.gate.weight[0] = 10 * x.mean(0) / x.mean(0).norm()
    moe(x + x.mean(0) * 5)
    skewed = moe.aux_losses[-1]
    assert moe.last_counts[0] == 64 and skewed > balanced
    skewed.backward()  # it trains the gate
    assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0


def test_top_k_must_fit() -> None:
    with pytest.raises(ValueError, match="top_k=5"):
        make_moe(num_experts=4, top_k=5)


def test_dense_passes_equal_each_expert_applied_to_its_own_tokens() -> None:
    """The k-pass forward against the textbook definition: gather each expert's tokens, run
    expert_e(x) = act(x (W1 + A1 B1) + b1) (W2 + A2 B2) + b2, mix with the gate weights."""
    moe = make_moe(num_experts=4, top_k=2)
    with torch.no_grad():
        for b in (moe.experts.b_up, moe.experts.b_down):
            b.normal_(std=0.5)
        moe.gate.weight.normal_(std=1.0)
    x = torch.randn(40, 16)
    probs = torch.softmax(moe.gate(x), dim=-1)
    top_p, top_i = probs.topk(2, dim=-1)
    weights = top_p / top_p.sum(-1, keepdim=True)
    ex = moe.experts
    expected = torch.zeros_like(x)
    for e in range(4):
        rows, slot = (top_i == e).nonzero(as_tuple=True)
        w_up = moe.dense.weight.T + ex.a_up[e] @ ex.b_up[e]
        w_down = moe.down.weight.T + ex.a_down[e] @ ex.b_down[e]
        h = nn.functional.gelu(x[rows] @ w_up + moe.dense.bias)
        expected.index_add_(0, rows, (h @ w_down + moe.down.bias) * weights[rows, slot, None])
    assert torch.allclose(moe(x), expected, atol=1e-5)
