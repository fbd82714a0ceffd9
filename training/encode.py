"""Batched embedding of conversations and task texts, exactly as the server prepares them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from models import ChatMessage, TaskClassifier, build_prompt, pad_batch
from models.prompt import LATEST_TURN


def collate(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = pad_batch(rows, pad_id)
    return ids.to(device), mask.to(device)


def token_rows(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[ChatMessage]],
    max_len: int,
    context: str = LATEST_TURN,
) -> list[list[int]]:
    return [build_prompt(tokenizer, c, max_len, context).input_ids for c in conversations]


@torch.inference_mode()
def embed(
    model: TaskClassifier,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[ChatMessage]],
    *,
    side: str = "prompt",
    max_len: int | None = None,
    batch_size: int = 128,
    context: str | None = None,
) -> torch.Tensor:
    """Unit-norm embeddings [N, D] (on the model's device), in input order; sorted by length
    inside so that batches pad little. `context`: how a conversation is read (models/prompt.py);
    default: the model's."""
    device = next(model.parameters()).device
    max_len = max_len or model.config.max_seq_len
    rows = token_rows(tokenizer, conversations, max_len, context or model.config.context)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.empty(len(rows), model.dim, device=device)
    encode = model.encode_prompts if side == "prompt" else model.encode_tasks
    pad = tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        out[chunk] = encode(*collate([rows[i] for i in chunk], pad, device)).float()
    return out


def as_user(texts: Sequence[str]) -> list[tuple[ChatMessage, ...]]:
    return [(ChatMessage("user", t),) for t in texts]
