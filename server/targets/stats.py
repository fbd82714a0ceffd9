"""Measured speed per model, for `prefer: fastest`.

The rule for ordering (documented in the README): a model's time to first token is the exponential
moving average (weight `alpha` on the newest sample) of its streamed requests; a model never streamed
to uses the moving average of its non-streamed latency; a model never measured uses the catalogue's
`latency_ms` prior; with no prior either it goes last (ties keep the pool's list order)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class _Ewma:
    alpha: float
    value: float | None = None
    count: int = 0

    def add(self, sample: float) -> None:
        self.value = sample if self.value is None else self.alpha * sample + (1 - self.alpha) * self.value
        self.count += 1


class LatencyStats:
    def __init__(self, alpha: float = 0.2) -> None:
        self._alpha = alpha
        self._ttft: dict[str, _Ewma] = {}
        self._latency: dict[str, _Ewma] = {}

    def record_ttft(self, model: str, ms: float) -> None:
        self._ttft.setdefault(model, _Ewma(self._alpha)).add(ms)

    def record_latency(self, model: str, ms: float) -> None:
        self._latency.setdefault(model, _Ewma(self._alpha)).add(ms)

    def expected_ms(self, model: str, prior_ms: float | None) -> float:
        """What `prefer: fastest` sorts by (see the module docstring for the rule)."""
        for table in (self._ttft, self._latency):
            measured = table.get(model)
            if measured is not None and measured.value is not None:
                return measured.value
        return prior_ms if prior_ms is not None else math.inf

    def snapshot(self, model: str) -> dict[str, float | int | None]:
        ttft, latency = self._ttft.get(model), self._latency.get(model)
        return {
            "ttft_ms": ttft.value if ttft else None,
            "ttft_samples": ttft.count if ttft else 0,
            "latency_ms": latency.value if latency else None,
            "latency_samples": latency.count if latency else 0,
        }
