"""One request's path, shared by the gRPC servicer, the HTTP API and the console: validate the
conversation, classify it against a router, and list the models to try in policy order. Every function
takes the parts it uses (registry, engine, batcher, targets), never the whole runtime."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models import ALLOWED_ROLES, ChatMessage, PromptInput
from server.batching import Batcher, BatchInfo
from server.config import LimitsSection
from server.engine import BatchItem, Engine
from server.errors import InvalidInput, NotFound
from server.policies import PREFERENCES, Skip, admissible, estimate_input_tokens, order_models
from server.registry import CompiledRouter, Decision, RouterRegistry
from server.targets import ModelInfo, Targets
from server.telemetry import RequestRecord

ClassifierBatcher = Batcher[BatchItem, np.ndarray]


def validate_messages(messages: Sequence[ChatMessage], limits: LimitsSection, where: str = "") -> None:
    """Raise InvalidInput naming the first problem: too many messages, a bad role, too many bytes,
    nothing to classify."""
    if len(messages) > limits.max_messages:
        raise InvalidInput(f"{where}{len(messages)} messages; at most {limits.max_messages} allowed")
    size = 0
    for i, message in enumerate(messages):
        if message.role not in ALLOWED_ROLES:
            raise InvalidInput(
                f"{where}messages[{i}].role {message.role!r} is not allowed; use one of: "
                + ", ".join(ALLOWED_ROLES)
            )
        size += len(message.content.encode("utf-8"))
    if size > limits.max_prompt_bytes:
        raise InvalidInput(
            f"{where}prompt is {size} bytes; at most {limits.max_prompt_bytes} bytes are accepted "
            f"(the classifier reads only its first tokens)"
        )
    if not any(m.content.strip() for m in messages):
        raise InvalidInput(f"{where}prompt is empty: set prompt, or messages with non-empty content")


def lookup_router(registry: RouterRegistry, name: str, where: str = "") -> CompiledRouter:
    if not name:
        known = ", ".join(r.spec.name for r in registry.list()) or "none"
        raise InvalidInput(f"{where}router is required; known: {known}")
    try:
        return registry.get(name)
    except NotFound as exc:
        if not where:
            raise
        raise NotFound(f"{where}{exc}") from None


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


@dataclass(frozen=True)
class Plan:
    """The models to try, best first, and the ones the policy had to leave out (and why)."""

    models: tuple[str, ...]
    policy: str  # cheapest, fastest, manual, fallback, pinned or direct
    skipped: tuple[Skip, ...]


def request_tokens(
    messages: Sequence[ChatMessage], max_tokens: int | None, default_output_tokens: int
) -> tuple[int, int]:
    """(input, output) token estimates that the cheapest policy and the cost cap price."""
    return estimate_input_tokens([m.content for m in messages]), max_tokens or default_output_tokens


def admit(
    targets: Targets, ordered: Sequence[str], policy: str, tokens: tuple[int, int], *caps: float | None
) -> Plan:
    """Keep the ordered candidates that can take the request; the lowest of the given cost caps applies."""
    limits = [c for c in caps if c is not None]
    keep, skipped = admissible(
        ordered, targets.catalog, targets.healthy, *tokens, min(limits) if limits else None
    )
    return Plan(tuple(keep), policy, tuple(skipped))


def plan(
    targets: Targets,
    router: CompiledRouter,
    decision: Decision,
    tokens: tuple[int, int],
    max_cost_usd: float | None = None,
    with_fallback: bool = False,
) -> Plan:
    """Order the decision's pool by its policy with live signals, then drop what cannot serve it.
    `tokens`: the request's (input, output) estimate (`request_tokens`). `with_fallback`
    (forwarding) appends the router's fallback models after a matched task's pool."""
    pool, policy = router.pool(decision)
    prefer = policy if policy in PREFERENCES else None
    ordered = list(order_models(pool, prefer, targets.catalog, targets.stats, *tokens))
    if with_fallback and decision.matched:
        ordered += [m for m in router.spec.fallback_models if m not in ordered]
    return admit(targets, ordered, policy, tokens, router.spec.max_cost_usd, max_cost_usd)


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


def record_planned(
    record: RequestRecord, plan: Plan, first: ModelInfo | None = None, tokens: tuple[int, int] | None = None
) -> None:
    """The policy's candidates. With `first` and `tokens` (Route: nothing is called), the estimated
    cost of sending the request to the first candidate."""
    record.candidates = plan.models
    record.policy = plan.policy
    record.model = plan.models[0] if plan.models else ""
    if first is not None and tokens is not None:
        record.prompt_tokens, record.completion_tokens = tokens
        record.cost_usd = first.cost_usd(*tokens)
        record.cost_estimated = True
