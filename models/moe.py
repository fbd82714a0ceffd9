"""A sparse mixture of low-rank experts, upcycled from a transformer layer's feed-forward block.

Where the experts sit: in the feed-forward blocks (FFN) of chosen encoder layers. Each expert is the
layer's own pretrained FFN plus a low-rank correction of both its matrices (a "mixture of LoRA
experts", Zadouri et al. 2023, upcycled as in Komatsuzaki et al. 2022):

    expert_e(x) = (gelu(x (W1 + A1_e B1_e) + b1)) (W2 + A2_e B2_e) + b2

A gate scores every token against the experts; each token goes to its top-k experts and their
outputs are mixed with the softmax of the top-k gate scores. Why this shape:

- The FFN is where a transformer keeps most of its "knowledge"; letting different kinds of text
  (support tickets, code, questions about subjects...) take different FFN corrections is what a
  router over many taxonomies needs, while attention stays shared.
- The B matrices start at zero, so at initialisation every expert *is* the pretrained FFN and the
  model is exactly the base encoder: training starts from its zero-shot quality, never below it.
- Experts are low-rank, so a checkpoint stores a few MB of new weights on top of the packaged base
  encoder, small enough for git; x W1 is computed once per token, and the low-rank corrections cost
  little enough that the forward runs as k dense passes instead of gathering tokens per expert.

The load-balancing loss is the Switch Transformer one, E * sum_e f_e * P_e (f_e: share of routed
token slots, P_e: mean gate probability), equal to 1 when tokens spread evenly and larger otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

# The shape of the exported mixture (a part of the ONNX cache key: a new shape is a new export).
MIX_GRAPH = "fused-down-v2"


class LowRankExperts(nn.Module):
    """E low-rank corrections of an FFN's two matrices."""

    def __init__(self, num_experts: int, dim: int, hidden: int, rank: int) -> None:
        super().__init__()
        self.a_up = nn.Parameter(torch.empty(num_experts, dim, rank))
        self.b_up = nn.Parameter(torch.zeros(num_experts, rank, hidden))
        self.a_down = nn.Parameter(torch.empty(num_experts, hidden, rank))
        self.b_down = nn.Parameter(torch.zeros(num_experts, rank, dim))
        # Kaiming-uniform A and zero B (the LoRA initialisation): the correction starts at zero.
        for a in (self.a_up, self.a_down):
            nn.init.kaiming_uniform_(a.view(-1, rank).T, a=math.sqrt(5))


class MoEFeedForward(nn.Module):
    """Replaces a BERT-style layer's `intermediate` module: computes the whole mixed FFN output.

    It keeps the pretrained up-projection registered under the same name (`dense`) and borrows the
    layer's down-projection from its `output` module without registering it, so checkpoint keys of
    pretrained weights stay identical to the base model's and only new or changed tensors are saved.
    """

    def __init__(
        self,
        up: nn.Linear,
        down: nn.Linear,
        act: Callable[[torch.Tensor], torch.Tensor],
        num_experts: int,
        top_k: int,
        rank: int,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and num_experts={num_experts}")
        self.dense = up
        self._down = (down,)  # a tuple hides it from the module tree (it belongs to `output`)
        self.act = act
        self.num_experts = num_experts
        self.top_k = top_k
        self.gate = nn.Linear(up.in_features, num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=0.02)
        self.experts = LowRankExperts(num_experts, up.in_features, up.out_features, rank)
        self.token_mask: torch.Tensor | None = None  # [B, T] of the current batch, set by the caller
        # Load-balancing losses of the forwards since the caller last collected them (training keeps
        # every one, for the prompt and the task side of a step; eval keeps only the latest).
        self.aux_losses: list[torch.Tensor] = []
        self.last_counts: torch.Tensor | None = None  # tokens routed to each expert in the last forward
        # Off in graphs that must have static shapes and no host syncs (ONNX export, CUDA graphs):
        # bincount sizes its output from the data. Training always records.
        self.record_stats = True

    @property
    def down(self) -> nn.Linear:
        return self._down[0]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        flat = hidden.reshape(-1, shape[-1])
        mask = self.token_mask
        # Only real tokens are routed: padding neither costs expert compute nor skews the balance.
        keep = mask.reshape(-1).bool() if mask is not None and mask.numel() == flat.shape[0] else None
        tokens = flat[keep] if keep is not None else flat

        logits = self.gate(tokens).float()
        probs = torch.softmax(logits, dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        weights = (top_p / top_p.sum(dim=-1, keepdim=True)).to(tokens.dtype)

        out = self._mix(tokens, top_i, weights)
        if self.training or self.record_stats:
            counts = torch.bincount(top_i.reshape(-1), minlength=self.num_experts).to(probs.dtype)
            share = counts / counts.sum().clamp(min=1.0)
            aux = self.num_experts * (share * probs.mean(dim=0)).sum()
            self.aux_losses = [*self.aux_losses, aux] if self.training else [aux.detach()]
            self.last_counts = counts.detach()
        if keep is None:
            return out.reshape(shape[:-1] + (out.shape[-1],))
        full = torch.zeros(flat.shape[0], out.shape[-1], dtype=out.dtype, device=out.device)
        full[keep] = out
        return full.reshape(shape[:-1] + (out.shape[-1],))

    def _mix(self, tokens: torch.Tensor, top_i: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum over a token's k slots of weight * expert(token), fused so that the MoE costs about what
        the plain FFN does.

        Why not loop over experts and gather their tokens: with rank-r experts, every expert's
        A-projection of every token is one [N, d] x [d, E*r] product (E*r is small), and masking
        it to the slot's expert before the B-projection selects that expert exactly. That turns
        E gathers and 4E small products into k passes of a few large ones, which is what both a CPU
        at batch 1 and a GPU at batch 64 run fastest.

        Why one down-projection for all k slots: it is linear and a token's slot weights sum to 1, so
        sum_s w_s (h_s W2 + b2) = (sum_s w_s h_s) W2 + b2. Only the up side (x W1, computed once)
        plus each slot's low-rank correction and activation are per slot; the [N, h] x [h, d] product,
        the FFN's other half, runs once instead of k times.
        """
        ex = self.experts
        n, e, r = tokens.shape[0], self.num_experts, ex.a_up.shape[-1]
        a_up = ex.a_up.permute(1, 0, 2).reshape(-1, e * r)  # [d, E*r]
        a_down = ex.a_down.permute(1, 0, 2).reshape(-1, e * r)  # [h, E*r]
        b_up = ex.b_up.reshape(e * r, -1)  # [E*r, h]
        b_down = ex.b_down.reshape(e * r, -1)  # [E*r, d]
        shared_up = self.dense(tokens)  # x W1 + b1, once per token for every slot
        low_up = (tokens @ a_up).view(n, e, r)
        mixed = torch.zeros_like(shared_up)  # sum_s w_s h_s, [N, h]
        low_down = torch.zeros_like(low_up).view(n, e * r)  # sum_s w_s (h_s A2_e masked to e), [N, E*r]
        for slot in range(self.top_k):
            chosen = nn.functional.one_hot(top_i[:, slot], e).to(tokens.dtype).unsqueeze(-1)  # [N, E, 1]
            weight = weights[:, slot : slot + 1]
            h = self.act(shared_up + (low_up * chosen).view(n, e * r) @ b_up)
            mixed = mixed + weight * h
            low_down = low_down + weight * ((h @ a_down).view(n, e, r) * chosen).view(n, e * r)
        return self.down(mixed) + low_down @ b_down


class MoEOutput(nn.Module):
    """The layer's `output` module without its projection (MoEFeedForward already applied it):
    dropout, residual and LayerNorm, under the original parameter names."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.dense = original.dense  # kept for its checkpoint key; MoEFeedForward calls it
        self.LayerNorm = original.LayerNorm
        self.dropout = original.dropout

    def forward(self, hidden: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(hidden) + input_tensor)


def upcycle(
    transformer: nn.Module, layers: tuple[int, ...], num_experts: int, top_k: int, rank: int
) -> list[MoEFeedForward]:
    """Turn the FFN of each listed layer of a BERT-style encoder into a MoEFeedForward, in place."""
    try:
        blocks = transformer.encoder.layer
    except AttributeError as exc:
        raise ValueError(
            f"{type(transformer).__name__} has no encoder.layer list; experts need a BERT-style encoder"
        ) from exc
    moes = []
    for index in layers:
        if not -len(blocks) <= index < len(blocks):
            raise ValueError(f"moe layer {index} does not exist; the encoder has {len(blocks)} layers")
        block = blocks[index]
        moe = MoEFeedForward(
            block.intermediate.dense,
            block.output.dense,
            block.intermediate.intermediate_act_fn,
            num_experts,
            top_k,
            rank,
        )
        block.intermediate = moe
        block.output = MoEOutput(block.output)
        moes.append(moe)
    return moes
