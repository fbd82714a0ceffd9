"""The models to try for one decision: the task's pool (or the fallback models) ordered by the
router's policy with live signals, then filtered to those that can take the request (healthy, big
enough, within the cost caps). Every function takes the parts it uses, never the runtime."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models import ChatMessage
from server.routing.policies import PREFERENCES, Skip, admissible, estimate_input_tokens, order_models
from server.routing.registry import CompiledRouter, Decision
from server.targets import ModelInfo, Targets
from server.telemetry import RequestRecord


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


def admissible_plan(
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
    return admissible_plan(targets, ordered, policy, tokens, router.spec.max_cost_usd, max_cost_usd)


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
