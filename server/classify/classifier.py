"""The one "prepare, submit, decide" path: a validated conversation becomes the encoder's input
(`Engine.prepare`, the router's context mode), goes through the batcher with the router's task
prototypes, and the router decides task or fallback from the similarities. Classify, Route, chat
routing, ClassifyBatch and the console's playground and Evaluate all call it; each function takes
the parts it uses (engine, batcher), never the runtime."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models import ChatMessage, PromptInput
from server.classify.batching import Batcher, BatchInfo
from server.classify.engine import BatchItem, Engine
from server.routing.registry import CompiledRouter, Decision
from server.telemetry import RequestRecord

ClassifierBatcher = Batcher[BatchItem, np.ndarray]


@dataclass(frozen=True)
class Classified:
    router: CompiledRouter
    decision: Decision
    prompt: PromptInput
    info: BatchInfo
    tokenize_ms: float
    received: float  # perf_counter() when the request arrived


async def classify(
    engine: Engine,
    batcher: ClassifierBatcher,
    router: CompiledRouter,
    messages: Sequence[ChatMessage],
    received: float | None = None,
) -> Classified:
    """Score `messages` (already validated by the caller) against `router`'s tasks. `received`: when
    the request arrived (perf_counter), so its latency includes the caller's checks."""
    received = time.perf_counter() if received is None else received
    prompt = engine.prepare(list(messages), router.context)
    tokenize_ms = (time.perf_counter() - received) * 1e3
    sims, info = await batcher.submit((prompt, router.prototypes), prompt.n_tokens)
    return Classified(router, router.decide(sims), prompt, info, tokenize_ms, received)


async def classify_many(
    engine: Engine,
    batcher: ClassifierBatcher,
    routers: Sequence[CompiledRouter],
    conversations: Sequence[Sequence[ChatMessage]],
    received: float | None = None,
    slice_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Classified]:
    """Score many validated conversations, each against its own router. Tokenizing hundreds of prompts
    would stall the event loop, so a worker thread does it. The batcher admits all of them at once
    (all or nothing: ClassifyBatch's contract) or, with `slice_size`, in slices the admission bound
    can take, so a large evaluation waits its turn instead of being refused."""
    received = time.perf_counter() if received is None else received
    pairs = list(zip(routers, conversations, strict=True))
    prompts: list[PromptInput] = await asyncio.get_running_loop().run_in_executor(
        None, lambda: [engine.prepare(list(m), r.context) for r, m in pairs]
    )
    tokenize_ms = (time.perf_counter() - received) * 1e3
    step = slice_size or len(prompts)
    results = []
    for start in range(0, len(prompts), step):
        chunk = list(zip(routers[start : start + step], prompts[start : start + step], strict=True))
        results += await batcher.submit_many(
            [(p, r.prototypes) for r, p in chunk], [p.n_tokens for _, p in chunk]
        )
        if progress is not None:
            progress(len(results))  # an evaluation job's progress bar
    return [
        Classified(r, r.decide(sims), p, info, tokenize_ms, received)
        for r, p, (sims, info) in zip(routers, prompts, results, strict=True)
    ]


def record_classified(record: RequestRecord, c: Classified) -> None:
    record.router = c.router.spec.name
    record.task = c.decision.task
    record.matched = c.decision.matched
    record.confidence = c.decision.scores[0].score if c.decision.scores else None
    record.input_tokens = c.prompt.n_tokens
    record.tokenize_ms = c.tokenize_ms
    record.queue_ms = c.info.queue_ms
    record.inference_ms = c.info.inference_ms
    record.batch_size = c.info.size
