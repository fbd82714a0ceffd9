"""The inference engine: device, dtype, tokenization and forward passes. Synchronous; knows no asyncio.

Only the batcher's single worker thread calls `score` and `task_prototypes`, so the model is never
run from two threads at once; `prepare` (tokenization) is pure CPU work without torch and may run
on the event loop or another thread: every tokenizer call uses the same settings, so concurrent
calls only read the tokenizer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from models import (
    DEFAULT_CHECKPOINT,
    ChatMessage,
    PromptInput,
    TaskClassifier,
    build_prompt,
    load_checkpoint,
    pad_batch,
)
from server.config import ModelSection

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TaskText:
    """What a task's prototype is built from."""

    description: str
    examples: tuple[str, ...] = ()


def pick_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """'auto' prefers CUDA in float16; CPU runs in float32 (half precision is slow there)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device={device!r} but CUDA is not available; use 'auto' or 'cpu'")
    if dtype == "auto":
        return resolved, torch.float16 if resolved.type == "cuda" else torch.float32
    return resolved, _DTYPES[dtype]


class Engine:
    def __init__(
        self,
        model: TaskClassifier,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dtype: torch.dtype,
        metadata: dict | None = None,
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.metadata = metadata or {}
        self.max_tokens = model.config.max_seq_len
        self.pad_id = tokenizer.pad_token_id or 0

    @classmethod
    def load(cls, cfg: ModelSection) -> Engine:
        checkpoint = cfg.checkpoint or DEFAULT_CHECKPOINT
        device, dtype = pick_device(cfg.device, cfg.dtype)
        model, tokenizer, metadata = load_checkpoint(checkpoint)
        log.info("loaded checkpoint %s on %s (%s)", checkpoint, device, dtype)
        return cls(model, tokenizer, device, dtype, metadata)

    @property
    def temperature(self) -> float:
        return self.model.config.temperature

    @property
    def default_threshold(self) -> float:
        return self.model.config.threshold

    def prepare(self, messages: Sequence[ChatMessage]) -> PromptInput:
        return build_prompt(self.tokenizer, messages, self.max_tokens)

    def _collate(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = pad_batch(rows, self.pad_id)
        return ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        # Same tokenization path as prompts: a fast tokenizer mutates shared state when truncation
        # settings change between calls, which breaks ("Already borrowed") under concurrent use.
        rows = [self.prepare([ChatMessage("user", text)]).input_ids for text in texts]
        return self.model.encode_tasks(*self._collate(rows))

    @torch.inference_mode()
    def task_prototypes(self, tasks: Sequence[TaskText]) -> torch.Tensor:
        """Prototypes [T, D] on the device; computed once per router version and cached by the caller."""
        descriptions = self._encode_texts([t.description for t in tasks])
        examples = [self._encode_texts(t.examples) if t.examples else None for t in tasks]
        return self.model.task_prototypes(descriptions, examples)

    @torch.inference_mode()
    def score(self, prompts: Sequence[PromptInput], prototypes: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Similarities of each prompt to the tasks of its own router: one encoder pass for the batch,
        then one small matrix product per distinct router in it."""
        embeddings = self.model.encode_prompts(*self._collate([p.input_ids for p in prompts]))
        results: list[np.ndarray | None] = [None] * len(prompts)
        groups: dict[int, list[int]] = {}
        for i, proto in enumerate(prototypes):
            groups.setdefault(id(proto), []).append(i)
        for rows in groups.values():
            sims = self.model.similarity(embeddings[rows], prototypes[rows[0]]).float().cpu().numpy()
            for row, sim in zip(rows, sims, strict=True):
                results[row] = sim
        return results  # type: ignore[return-value]

    def warmup(self) -> None:
        """Exercise the shapes real traffic uses so lazy initialisation happens before SERVING."""
        proto = self.task_prototypes([TaskText("warm-up task"), TaskText("another task", ("an example",))])
        for batch, length in ((1, 16), (8, 64), (32, self.max_tokens)):
            ids = [self.tokenizer.cls_token_id or 0] * length
            self.score([PromptInput(ids, False)] * batch, [proto] * batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
