"""Which models a chat request goes to: a router (`router:<name>`) classifies and plans, a plain
catalogue model goes straight through, and an affinity key pins a conversation to the model its first
request went to (the pin is read here and written by the session once a model has answered)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models import ChatMessage
from server.chat.affinity import AffinityStore, Pin
from server.classify.classifier import Classified, ClassifierBatcher, classify, record_classified
from server.classify.engine import Engine
from server.classify.request import check_affinity_key, check_max_cost, validate_messages
from server.config import LimitsSection
from server.errors import InvalidInput
from server.routing.plan import Plan, admissible_plan, plan, record_planned, request_tokens
from server.routing.registry import CompiledRouter, RouterRegistry
from server.targets import Targets
from server.telemetry import RequestRecord

ROUTER_PREFIX = "router:"
PINNED = "pinned"


@dataclass(frozen=True)
class ChatRequest:
    """What both chat fronts ask for, read from protobuf or JSON; checked by `ChatRouting.route`."""

    model: str  # "router:<name>" or a catalogue model
    messages: Sequence[ChatMessage]
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    affinity_key: str | None = None


@dataclass(frozen=True)
class Routed:
    router: str | None  # None: a plain model, no classification
    task: str | None
    plan: Plan
    pinned: bool
    affinity_key: str | None
    classified: Classified | None = None  # None: pinned, or a plain model


class ChatRouting:
    """Built once by the runtime (server/runtime.py) from the parts it uses."""

    def __init__(
        self,
        registry: RouterRegistry,
        engine: Engine,
        batcher: ClassifierBatcher,
        targets: Targets,
        affinity: AffinityStore,
        limits: LimitsSection,
        default_output_tokens: int,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.batcher = batcher
        self.targets = targets
        self.affinity = affinity
        self.limits = limits
        self.default_output_tokens = default_output_tokens

    async def route(self, request: ChatRequest) -> Routed:
        model, messages, max_cost_usd = request.model, request.messages, request.max_cost_usd
        if not model:
            raise InvalidInput(f"model is required: '{ROUTER_PREFIX}<name>' or a catalogue model name")
        key = check_affinity_key(request.affinity_key)
        check_max_cost(max_cost_usd)
        router = self.registry.get(model[len(ROUTER_PREFIX) :]) if model.startswith(ROUTER_PREFIX) else None
        validate_messages(messages, self.limits)  # once, for every path below
        tokens = request_tokens(messages, request.max_tokens, self.default_output_tokens)
        if router is not None:
            return await self._routed(router, messages, max_cost_usd, key, tokens)
        catalog = self.targets.catalog
        if model not in catalog.models:
            known = ", ".join(f"{ROUTER_PREFIX}{r.spec.name}" for r in self.registry.list())
            raise InvalidInput(f"unknown model {model!r}; use a router ({known}) or a catalogue model")
        if catalog.models[model].pool is None:
            raise InvalidInput(
                f"model {model!r} has no pool: routers may plan it, but it cannot be called; "
                "GET /v1/models lists the callable ones"
            )
        direct = admissible_plan(self.targets, [model], "direct", tokens, max_cost_usd)
        return Routed(None, None, direct, False, key)

    async def _routed(
        self,
        router: CompiledRouter,
        messages: Sequence[ChatMessage],
        max_cost_usd: float | None,
        key: str | None,
        tokens: tuple[int, int],
    ) -> Routed:
        name = router.spec.name
        if key is not None:
            pin = await self.affinity.get(f"{name}:{key}")
            if pin is not None:
                pinned = self._pinned_plan(router, pin, tokens, max_cost_usd)
                if pinned is not None:
                    return Routed(name, pin.task, pinned, True, key)
        classified = await classify(self.engine, self.batcher, router, messages)
        chosen = plan(self.targets, router, classified.decision, tokens, max_cost_usd, with_fallback=True)
        return Routed(name, classified.decision.task, chosen, False, key, classified)

    def _pinned_plan(
        self, router: CompiledRouter, pin: Pin, tokens: tuple[int, int], max_cost_usd: float | None
    ) -> Plan | None:
        """The pinned model first, then the router's fallback models; None when the pinned model can no
        longer take the request (gone from the catalogue, unhealthy, over budget): route afresh."""
        if pin.model not in self.targets.catalog.models:
            return None
        ordered = [pin.model] + [m for m in router.spec.fallback_models if m != pin.model]
        caps = (router.spec.max_cost_usd, max_cost_usd)
        pinned = admissible_plan(self.targets, ordered, PINNED, tokens, *caps)
        return pinned if pinned.models[:1] == (pin.model,) else None


def record_routed(record: RequestRecord, routed: Routed) -> None:
    """A chat's routing: its classification (unless pinned or a plain model) and its candidates."""
    if routed.classified is not None:
        record_classified(record, routed.classified)
    record.router = routed.router or ""
    record.task = routed.task or ""
    record.pinned = routed.pinned
    record_planned(record, routed.plan)
