"""The inference engine: backend, device, dtype, tokenization and forward passes. Synchronous, no asyncio.

Two backends run the encoder: torch (the reference; CUDA or CPU) and ONNX Runtime (CPU only, fp32
or int8 MatMuls; models/onnx_export.py). Everything around the encoder (prototype mixing,
similarities) stays in torch, so both backends share it.

Only the batcher's single worker thread calls `score`, `compile` and `task_prototypes`, so the model is never
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
    ClassifierConfig,
    PromptInput,
    TaskClassifier,
    TaskVectors,
    build_prompt,
    load_checkpoint,
    pad_batch,
)
from models.cuda_graphs import LENGTH_BUCKETS, GraphedEncoder, bucket
from models.nomatch import Calibration, Fit, background_prompts, calibrate, fit_threshold
from models.onnx_export import OnnxEncoder, cached_export, onnx_available
from server.config import ModelSection

# What the batcher queues for the engine: a prepared prompt and its router's task prototypes.
BatchItem = tuple[PromptInput, torch.Tensor]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TaskText:
    """What a task's prototype is built from."""

    description: str
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompiledTasks:
    """What one router version needs at request time, built once on the engine thread."""

    prototypes: TaskVectors  # prototypes [T, D] (and any learned examples) on the device
    calibration: Calibration  # the background's best similarities in this router (models/nomatch.py)
    fit: Fit  # the threshold fitted from examples and fallback examples (or the default)


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


def pick_backend(backend: str, device: torch.device) -> str:
    """'auto' = torch on CUDA, int8 ONNX Runtime on CPU when installed (measured fastest there)."""
    if backend == "auto":
        if device.type != "cpu":
            return "torch"
        if onnx_available():
            return "onnx-int8"
        log.warning("onnxruntime is not installed: classifying with torch on CPU (about 3x slower)")
        return "torch"
    if backend.startswith("onnx"):
        if device.type != "cpu":
            raise ValueError(f"model.backend={backend!r} runs on CPU only; use 'torch' on {device}")
        if not onnx_available():
            raise ValueError(f"model.backend={backend!r} needs `pip install onnxruntime onnx`")
    return backend


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Indices of a batch grouped by padded-length bucket, shortest first: one encoder pass per group,
    so that one long prompt does not make every short one in its batch pay for its padding (the
    cost of a pass grows with batch x padded length)."""
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(bucket(length, LENGTH_BUCKETS) or length, []).append(index)
    return [groups[key] for key in sorted(groups)]


class Engine:
    def __init__(
        self,
        model: TaskClassifier,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dtype: torch.dtype,
        onnx: OnnxEncoder | None = None,
        backend: str = "torch",
        graphs: GraphedEncoder | None = None,
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.onnx = onnx
        self.backend = backend
        self.graphs = graphs
        self.max_tokens = model.config.max_seq_len
        self.pad_id = tokenizer.pad_token_id or 0
        self._background: np.ndarray | None = None  # background corpus embeddings, on first compile

    @classmethod
    def load(cls, cfg: ModelSection, max_batch: int = 64) -> Engine:
        checkpoint = cfg.checkpoint or DEFAULT_CHECKPOINT
        device, dtype = pick_device(cfg.device, cfg.dtype)
        backend = pick_backend(cfg.backend, device)
        if cfg.threads and device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        model, tokenizer, _ = load_checkpoint(checkpoint)
        onnx = None
        if backend.startswith("onnx"):
            precision = "int8" if backend == "onnx-int8" else "fp32"
            try:
                path = cached_export(model, precision, cfg.onnx_cache_dir)
                onnx = OnnxEncoder(path, threads=cfg.threads, spin=cfg.spin)
                dtype = torch.float32
            except Exception as exc:
                if cfg.backend != "auto":  # asked for by name: say why it cannot be had
                    raise ValueError(f"model.backend={backend!r}: the ONNX export failed: {exc}") from exc
                # A checkpoint the exporter cannot take still serves, on the reference path.
                log.warning("ONNX export failed (%s: %s); serving with torch", type(exc).__name__, exc)
                backend = "torch"
        log.info("loaded checkpoint %s: %s on %s (%s)", checkpoint, backend, device, dtype)
        engine = cls(model, tokenizer, device, dtype, onnx, backend)
        if device.type == "cuda" and backend == "torch" and cfg.cuda_graphs:
            engine.graphs = GraphedEncoder(
                engine.model, device, max_batch, engine.max_tokens, engine.pad_id
            )  # captured by warmup(), before SERVING
        return engine

    @property
    def temperature(self) -> float:
        return self.model.config.temperature

    @property
    def config(self) -> ClassifierConfig:
        return self.model.config

    def prepare(self, messages: Sequence[ChatMessage], context: str | None = None) -> PromptInput:
        """Encoder input, read the `context` way (default: the checkpoint's)."""
        return build_prompt(self.tokenizer, messages, self.max_tokens, context or self.model.config.context)

    def _embed(self, rows: Sequence[Sequence[int]], tasks: bool = False) -> torch.Tensor:
        """Unit-norm embeddings [B, D] on the device, from the chosen backend."""
        ids, mask = pad_batch(rows, self.pad_id)
        if self.onnx is not None:  # the classifier shares every weight between prompts and tasks
            return torch.from_numpy(self.onnx(ids.numpy(), mask.numpy()))
        if self.device.type == "cuda":
            # Page-locked host memory: the copy to the GPU runs by DMA, without a staging copy.
            ids, mask = ids.pin_memory(), mask.pin_memory()
            if self.graphs is not None and not tasks:
                out = self.graphs(ids, mask)
                if out is not None:
                    return out
        ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
        return self.model.encode_tasks(ids, mask) if tasks else self.model.encode_prompts(ids, mask)

    def _rows(self, texts: Sequence[str]) -> list[list[int]]:
        # Same tokenization path as prompts: a fast tokenizer mutates shared state when truncation
        # settings change between calls, which breaks ("Already borrowed") under concurrent use.
        return [self.prepare([ChatMessage("user", text)]).input_ids for text in texts]

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self._embed(self._rows(texts), tasks=True)

    def _encode_prompts(self, texts: Sequence[str], batch: int = 64) -> np.ndarray:
        rows = self._rows(texts)
        chunks = [self._embed(rows[i : i + batch]).float().cpu() for i in range(0, len(rows), batch)]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.model.dim), np.float32)

    def background(self) -> np.ndarray:
        """Embeddings [B, D] of the background corpus, computed once (a second or two on CPU)."""
        if self._background is None:
            with torch.inference_mode():
                self._background = self._encode_prompts(background_prompts())
        return self._background

    @torch.inference_mode()
    def compile(
        self,
        tasks: Sequence[TaskText],
        fallback_examples: Sequence[str],
        criterion: str,
        default: float,
        fixed: float | None = None,
    ) -> CompiledTasks:
        """Prototypes, background calibration and the fitted threshold of one router version (with
        `fixed`, the router's own threshold, only what cross-validation expects of it)."""
        descriptions, examples = self._task_embeddings(tasks)
        prototypes = self.model.task_vectors([t.description for t in tasks], descriptions, examples)
        background = self.background()
        calibration = calibrate(prototypes, background)
        fit = fit_threshold(
            descriptions.float().cpu().numpy(),
            [
                e.float().cpu().numpy() if e is not None else np.zeros((0, self.model.dim), np.float32)
                for e in examples
            ],
            self._encode_prompts(fallback_examples),
            background,
            criterion,
            default,
            self.model.config.description_weight,
            fixed,
            prototypes,
        )
        return CompiledTasks(prototypes, calibration, fit)

    def _task_embeddings(self, tasks: Sequence[TaskText]) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """(description embeddings [T, D], each task's example embeddings or None)."""
        texts = [t.description for t in tasks]
        descriptions = self.model.describe(texts, self._encode_texts(texts))
        return descriptions, [self._encode_texts(t.examples) if t.examples else None for t in tasks]

    @torch.inference_mode()
    def task_prototypes(self, tasks: Sequence[TaskText]) -> TaskVectors:
        """What prompts are scored against, on the device, without calibration or fit (tests and
        benchmarks)."""
        texts = [t.description for t in tasks]
        return self.model.task_vectors(texts, *self._task_embeddings(tasks))

    @torch.inference_mode()
    def score(self, prompts: Sequence[PromptInput], prototypes: Sequence[TaskVectors]) -> list[np.ndarray]:
        """Similarities of each prompt to the tasks of its own router: one encoder pass for the batch,
        then one small matrix product per distinct router in it."""
        rows = [p.input_ids for p in prompts]
        by_length = length_groups([len(r) for r in rows])
        if len(by_length) == 1:
            embeddings = self._embed(rows)
        else:
            order = [i for group in by_length for i in group]
            stacked = torch.cat([self._embed([rows[i] for i in group]) for group in by_length])
            embeddings = stacked[torch.argsort(torch.tensor(order, device=stacked.device))]
        results: list[np.ndarray | None] = [None] * len(prompts)
        groups: dict[int, list[int]] = {}
        for i, proto in enumerate(prototypes):
            groups.setdefault(id(proto), []).append(i)
        for rows in groups.values():
            sims = prototypes[rows[0]].similarity(embeddings[rows]).float().cpu().numpy()
            for row, sim in zip(rows, sims, strict=True):
                results[row] = sim
        return results  # type: ignore[return-value]

    def warmup(self) -> None:
        """Exercise the shapes real traffic uses so lazy initialisation happens before SERVING;
        on CUDA, capture the graph of every bucket."""
        if self.graphs is not None:
            try:
                self.graphs.capture()
            except RuntimeError as exc:  # an op the capture cannot take: serve eagerly, say so
                log.warning("CUDA graph capture failed, running the encoder eagerly: %s", exc)
                self.graphs = None
        proto = self.task_prototypes([TaskText("warm-up task"), TaskText("another task", ("an example",))])
        self.background()
        for batch, length in ((1, 16), (8, 64), (32, self.max_tokens)):
            ids = [self.tokenizer.cls_token_id or 0] * length
            self.score([PromptInput(ids, False)] * batch, [proto] * batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
