"""Selection policies: order a task's pool at request time by the request's estimated cost, by
measured speed, or by the operator's list order; then drop the candidates that cannot take it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.targets import Catalog, LatencyStats

PREFERENCES = ("cheapest", "fastest")
MANUAL = "manual"
# Rough tokens per character of English text, and the per-message overhead of chat templates: an
# estimate good enough to price a request before a tokenizer of the target model has seen it.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate_input_tokens(contents: Sequence[str]) -> int:
    return sum(len(c) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE for c in contents)


def order_models(
    models: Sequence[str],
    prefer: str | None,
    catalog: Catalog,
    stats: LatencyStats,
    input_tokens: int,
    output_tokens: int,
) -> tuple[str, ...]:
    """The pool in the order to try it. Ties keep the operator's list order (the sort is stable)."""
    if prefer is None:
        return tuple(models)
    if prefer == "cheapest":
        return tuple(sorted(models, key=lambda m: catalog.models[m].cost_usd(input_tokens, output_tokens)))
    if prefer == "fastest":
        return tuple(sorted(models, key=lambda m: stats.expected_ms(m, catalog.models[m].latency_ms)))
    raise ValueError(f"unknown preference {prefer!r}; allowed: {', '.join(PREFERENCES)}")


def usd(amount: float) -> str:
    """Dollars readable at any size: six decimals, or three significant digits below a millionth
    (a cap of $0.0000002 printed as "$0.000000" read as no budget at all)."""
    return f"${amount:.6f}" if amount == 0 or abs(amount) >= 1e-6 else f"${amount:.3g}"


@dataclass(frozen=True)
class Skip:
    model: str
    reason: str
    over_budget: bool = False  # a bigger cost cap would have kept it


def admissible(
    models: Sequence[str],
    catalog: Catalog,
    healthy: Callable[[str], bool],
    input_tokens: int,
    output_tokens: int,
    max_cost_usd: float | None,
) -> tuple[list[str], list[Skip]]:
    """Split ordered candidates into those that can take the request and why the others cannot:
    unhealthy, too small a context window, or over the cost cap."""
    keep: list[str] = []
    skipped: list[Skip] = []
    for model in models:
        info = catalog.models[model]
        cost = info.cost_usd(input_tokens, output_tokens)
        if not healthy(model):
            skipped.append(Skip(model, "unhealthy"))
        elif input_tokens + output_tokens > info.context_tokens:
            skipped.append(
                Skip(model, f"needs ~{input_tokens + output_tokens} tokens; context is {info.context_tokens}")
            )
        elif max_cost_usd is not None and cost > max_cost_usd:
            reason = f"estimated {usd(cost)} exceeds the cap {usd(max_cost_usd)}"
            skipped.append(Skip(model, reason, over_budget=True))
        else:
            keep.append(model)
    return keep, skipped
