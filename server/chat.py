"""Routing a chat request to its candidate models, shared by the HTTP front and the gRPC Chat RPC:
a router (`router:<name>`) classifies and plans, a plain catalogue model goes straight through, and an
affinity key pins a conversation to the model its first request went to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models import ChatMessage
from server.affinity import MAX_KEY_CHARS, Pin
from server.app import App
from server.errors import InvalidInput
from server.pipeline import Plan, classify, plan, validate_messages
from server.policies import admissible, estimate_input_tokens
from server.routers import FALLBACK

ROUTER_PREFIX = "router:"
PINNED = "pinned"


@dataclass(frozen=True)
class Routed:
    router: str | None  # None: a plain model, no classification
    task: str | None
    plan: Plan
    pinned: bool
    affinity_key: str | None


def _check_key(key: str | None) -> str | None:
    if key is None or key == "":
        return None
    if len(key) > MAX_KEY_CHARS:
        raise InvalidInput(f"affinity key is {len(key)} characters; at most {MAX_KEY_CHARS} allowed")
    return key


class ChatRouter:
    def __init__(self, app: App) -> None:
        self.app = app

    async def route(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
        affinity_key: str | None = None,
    ) -> Routed:
        if not model:
            raise InvalidInput(f"model is required: '{ROUTER_PREFIX}<name>' or a catalogue model name")
        key = _check_key(affinity_key)
        if model.startswith(ROUTER_PREFIX):
            return await self._routed(model[len(ROUTER_PREFIX) :], messages, max_tokens, max_cost_usd, key)
        validate_messages(messages, self.app.cfg.limits)
        catalog = self.app.targets.catalog
        if model not in catalog.models:
            known = ", ".join(f"{ROUTER_PREFIX}{r.spec.name}" for r in self.app.registry.list())
            raise InvalidInput(f"unknown model {model!r}; use a router ({known}) or a catalogue model")
        tokens = estimate_input_tokens([m.content for m in messages])
        out = max_tokens or self.app.cfg.targets.default_output_tokens
        keep, skipped = admissible([model], catalog, self.app.targets.healthy, tokens, out, max_cost_usd)
        return Routed(None, None, Plan(tuple(keep), "direct", tuple(skipped), tokens, out), False, key)

    async def _routed(
        self,
        name: str,
        messages: Sequence[ChatMessage],
        max_tokens: int | None,
        max_cost_usd: float | None,
        key: str | None,
    ) -> Routed:
        router = self.app.registry.get(name)
        if key is not None:
            pin = await self.app.affinity.get(f"{name}:{key}")
            if pin is not None:
                validate_messages(messages, self.app.cfg.limits)
                pinned = self._pinned_plan(pin, messages, max_tokens, max_cost_usd)
                if pinned is not None:
                    return Routed(name, pin.task, pinned, True, key)
        classified = await classify(self.app, name, messages)
        chosen = plan(self.app, router, classified.decision, messages, max_tokens, max_cost_usd, True)
        return Routed(name, classified.decision.task, chosen, False, key)

    def _pinned_plan(
        self, pin: Pin, messages: Sequence[ChatMessage], max_tokens: int | None, max_cost_usd: float | None
    ) -> Plan | None:
        """The pinned model first, then the router's fallback models; None when the pinned model can no
        longer take the request (gone from the catalogue, unhealthy, over budget): route afresh."""
        router = self.app.registry.get(pin.router)
        catalog = self.app.targets.catalog
        if pin.model not in catalog.models:
            return None
        tokens = estimate_input_tokens([m.content for m in messages])
        out = max_tokens or self.app.cfg.targets.default_output_tokens
        caps = [c for c in (router.spec.max_cost_usd, max_cost_usd) if c is not None]
        ordered = [pin.model] + [m for m in router.spec.fallback_models if m != pin.model]
        keep, skipped = admissible(
            ordered, catalog, self.app.targets.healthy, tokens, out, min(caps) if caps else None
        )
        if not keep or keep[0] != pin.model:
            return None
        return Plan(tuple(keep), PINNED, tuple(skipped), tokens, out)

    async def served(self, routed: Routed, model: str) -> None:
        """Pin (or re-pin, if a fallback answered) the conversation to the model that served it."""
        if routed.affinity_key is None or routed.router is None:
            return
        pin = Pin(routed.router, routed.task or FALLBACK, model)
        await self.app.affinity.put(f"{routed.router}:{routed.affinity_key}", pin)
