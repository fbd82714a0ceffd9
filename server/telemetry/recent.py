"""The last hours of traffic in per-minute buckets, for the console's live analyze view: counts by
router, task and model, match and fallback counts, cost, and a log-scale latency histogram (bounded
memory whatever the traffic; percentiles within a bin's width, about 5%)."""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Latency bins: 0.05 ms to ~100 s, 5% wide.
_LOW_MS, _RATIO = 0.05, 1.05
_BINS = int(math.log(2e6) / math.log(_RATIO)) + 2
MAX_POINTS = 120  # of the per-window series


def _bin(ms: float) -> int:
    if ms <= _LOW_MS:
        return 0
    return min(_BINS - 1, int(math.log(ms / _LOW_MS) / math.log(_RATIO)) + 1)


def _bin_ms(i: int) -> float:
    return _LOW_MS * _RATIO**i


@dataclass
class Minute:
    start: int  # unix minute * 60
    requests: int = 0
    errors: int = 0
    classified: int = 0
    matched: int = 0
    tasks: Counter[tuple[str, str]] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    cost_usd: float = 0.0
    latency: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, dtype=np.int64))


class RecentTraffic:
    def __init__(self, keep_minutes: int = 24 * 60, clock: Callable[[], float] = time.time) -> None:
        self._minutes: deque[Minute] = deque(maxlen=keep_minutes)
        self._clock = clock

    def add(
        self,
        ok: bool,
        latency_ms: float,
        router: str,
        task: str,
        matched: bool | None,
        model: str,
        cost_usd: float | None,
    ) -> None:
        start = int(self._clock() // 60 * 60)
        if not self._minutes or self._minutes[-1].start != start:
            self._minutes.append(Minute(start))
        m = self._minutes[-1]
        m.requests += 1
        if not ok:
            m.errors += 1
            return
        m.latency[_bin(latency_ms)] += 1
        if matched is not None:
            m.classified += 1
            m.matched += matched
            m.tasks[(router, task)] += 1
        if model:
            m.models[model] += 1
        m.cost_usd += cost_usd or 0.0

    def summary(self, window_s: float) -> dict[str, Any]:
        """Totals, distributions, latency percentiles and a per-minute series over the last window_s."""
        since = self._clock() - window_s
        minutes = [m for m in self._minutes if m.start + 60 > since]
        tasks: Counter[tuple[str, str]] = Counter()
        models: Counter[str] = Counter()
        latency = np.zeros(_BINS, dtype=np.int64)
        for m in minutes:
            tasks.update(m.tasks)
            models.update(m.models)
            latency += m.latency
        classified = sum(m.classified for m in minutes)
        matched = sum(m.matched for m in minutes)
        return {
            "window_s": window_s,
            "requests": sum(m.requests for m in minutes),
            "errors": sum(m.errors for m in minutes),
            "classified": classified,
            "matched": matched,
            "match_rate": matched / classified if classified else None,
            "fallback_rate": (classified - matched) / classified if classified else None,
            "tasks": [{"router": r, "task": t, "count": n} for (r, t), n in tasks.most_common()],
            "models": [{"model": k, "count": n} for k, n in models.most_common()],
            "latency_ms": {f"p{q}": _quantile(latency, q / 100) for q in (50, 90, 99)},
            "cost_usd": sum(m.cost_usd for m in minutes),
            "series": self._series(minutes, window_s),
        }

    def _series(self, minutes: list[Minute], window_s: float) -> list[dict[str, Any]]:
        """The whole window in at most MAX_POINTS equal slots (whole minutes), quiet ones as zeros, so
        a chart's x axis is time."""
        slot = 60 * max(1, math.ceil(window_s / 60 / MAX_POINTS))
        end = int(self._clock() // 60 * 60) + 60
        count = max(1, math.ceil(window_s / slot))
        first = end - count * slot
        points = [{"t": first + i * slot, "requests": 0, "classified": 0, "matched": 0} for i in range(count)]
        for m in minutes:
            i = (m.start - first) // slot
            if 0 <= i < count:
                points[i]["requests"] += m.requests
                points[i]["classified"] += m.classified
                points[i]["matched"] += m.matched
        return points


def _quantile(histogram: np.ndarray, q: float) -> float | None:
    total = int(histogram.sum())
    if total == 0:
        return None
    i = int(np.searchsorted(np.cumsum(histogram), q * total))
    return round(_bin_ms(i), 3)  # the bin's upper edge: never under-reports
