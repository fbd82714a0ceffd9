"""One upstream server (a vLLM replica, a provider's base URL) and the circuit breaker that takes it
out of rotation after repeated failures and lets a single trial request bring it back."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class CircuitBreaker:
    """closed -> open after `failures` consecutive failures; after `open_s` it lets one trial request
    through (half-open): success closes it, failure re-opens it for twice as long (up to `max_open_s`),
    so a dead endpoint costs one failed request per back-off period, not one per request."""

    def __init__(
        self,
        failures: int = 3,
        open_s: float = 5.0,
        max_open_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._base_open_s = open_s
        self._max_open_s = max_open_s
        self._clock = clock
        self._consecutive = 0
        self._open_s = open_s
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self._open_s else "open"

    def available(self) -> bool:
        """May a request go here now? (No side effect: ranking asks this for every candidate.)"""
        state = self.state
        return state == "closed" or (state == "half-open" and not self._trial)

    def begin(self) -> None:
        """A request is about to be sent; in half-open state it is the one trial."""
        if self.state == "half-open":
            self._trial = True

    def abandon(self) -> None:
        """The request ended without an answer either way (its caller went away): the endpoint said
        nothing about its health, so the state stays and a half-open trial slot is free again."""
        self._trial = False

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._open_s = self._base_open_s
        self._trial = False

    def failure(self) -> None:
        self._consecutive += 1
        if self._opened_at is not None and self._trial:
            self._open_s = min(self._open_s * 2, self._max_open_s)
            self._opened_at = self._clock()
        elif self._opened_at is None and self._consecutive >= self._threshold:
            self._opened_at = self._clock()
        self._trial = False


@dataclass
class Endpoint:
    """An OpenAI-compatible base URL (ending in /v1) and what the balancer knows about it."""

    base_url: str
    breaker: CircuitBreaker
    headers: dict[str, str] = field(default_factory=dict)
    healthy: bool = True  # last health check answered
    outstanding: int = 0  # requests this service has in flight there
    queued: float = 0.0  # vLLM's own waiting + running requests, from its /metrics

    @property
    def root(self) -> str:
        """The server root (health and metrics live there, not under /v1)."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    def available(self) -> bool:
        return self.healthy and self.breaker.available()

    @property
    def load(self) -> float:
        return self.outstanding + self.queued
