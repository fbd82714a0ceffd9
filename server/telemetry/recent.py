"""The last hours of traffic in per-minute buckets, for the console's live analyze view: per router,
counts by task and model (served apart from planned-only), match and fallback counts, cost, and a
log-scale latency histogram (bounded memory whatever the traffic; percentiles within a bin's width,
about 5%). Kept per router so that the console's router filter applies to every panel; exported as
JSON so that with several workers the console merges them all, as /metrics does."""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
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
class Slice:
    """One router's traffic in one minute ("" for requests that named no router)."""

    requests: int = 0
    errors: int = 0
    classified: int = 0
    matched: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    served: Counter[str] = field(default_factory=Counter)  # models that answered
    planned: Counter[str] = field(default_factory=Counter)  # models Route / Playground only chose
    cost_usd: float = 0.0  # of what was served
    latency: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, dtype=np.int64))

    def merge(self, other: Slice) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.classified += other.classified
        self.matched += other.matched
        self.tasks.update(other.tasks)
        self.served.update(other.served)
        self.planned.update(other.planned)
        self.cost_usd += other.cost_usd
        self.latency += other.latency

    def to_json(self) -> dict[str, Any]:
        nonzero = np.flatnonzero(self.latency)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "classified": self.classified,
            "matched": self.matched,
            "tasks": dict(self.tasks),
            "served": dict(self.served),
            "planned": dict(self.planned),
            "cost_usd": self.cost_usd,
            "latency": {int(i): int(self.latency[i]) for i in nonzero},  # sparse: a few bins are used
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Slice:
        latency = np.zeros(_BINS, dtype=np.int64)
        for i, n in raw["latency"].items():
            latency[int(i)] = n
        return cls(
            raw["requests"],
            raw["errors"],
            raw["classified"],
            raw["matched"],
            Counter(raw["tasks"]),
            Counter(raw["served"]),
            Counter(raw["planned"]),
            raw["cost_usd"],
            latency,
        )


@dataclass
class Minute:
    start: int  # unix minute * 60
    routers: dict[str, Slice] = field(default_factory=dict)


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
        served: bool = True,
    ) -> None:
        """One finished request; `served`: a model answered it (else `model` was only planned)."""
        start = int(self._clock() // 60 * 60)
        if not self._minutes or self._minutes[-1].start != start:
            self._minutes.append(Minute(start))
        m = self._minutes[-1].routers.setdefault(router, Slice())
        m.requests += 1
        if not ok:
            m.errors += 1
            return
        m.latency[_bin(latency_ms)] += 1
        if matched is not None:
            m.classified += 1
            m.matched += matched
            m.tasks[task] += 1
        if model:
            (m.served if served else m.planned)[model] += 1
        if served:
            m.cost_usd += cost_usd or 0.0

    def export(self) -> list[dict[str, Any]]:
        """The minutes as JSON, for the other workers' console (server/telemetry/shared_metrics.py)."""
        return [
            {"start": m.start, "routers": {r: s.to_json() for r, s in m.routers.items()}}
            for m in self._minutes
        ]

    def summary(
        self, window_s: float, router: str | None = None, others: Iterable[list[dict[str, Any]]] = ()
    ) -> dict[str, Any]:
        """Totals, distributions, latency percentiles and a per-minute series over the last window_s,
        of one router or all, merged with other workers' `export`s."""
        since = self._clock() - window_s
        by_start: dict[int, Slice] = {}
        task_counts: Counter[tuple[str, str]] = Counter()

        def take(start: int, name: str, part: Slice) -> None:
            if start + 60 <= since or (router is not None and name != router):
                return
            by_start.setdefault(start, Slice()).merge(part)
            task_counts.update({(name, task): n for task, n in part.tasks.items()})

        for m in self._minutes:
            for name, part in m.routers.items():
                take(m.start, name, part)
        for export in others:
            for raw in export:
                for name, part in raw["routers"].items():
                    take(int(raw["start"]), name, Slice.from_json(part))
        total = Slice()
        for part in by_start.values():
            total.merge(part)
        classified, matched = total.classified, total.matched
        return {
            "window_s": window_s,
            "router": router,
            "requests": total.requests,
            "errors": total.errors,
            "classified": classified,
            "matched": matched,
            "match_rate": matched / classified if classified else None,
            "fallback_rate": (classified - matched) / classified if classified else None,
            "tasks": [{"router": r, "task": t, "count": n} for (r, t), n in task_counts.most_common()],
            "models": [{"model": k, "count": n} for k, n in total.served.most_common()],
            "planned_models": [{"model": k, "count": n} for k, n in total.planned.most_common()],
            "latency_ms": {f"p{q}": _quantile(total.latency, q / 100) for q in (50, 90, 99)},
            "cost_usd": total.cost_usd,
            "series": self._series(by_start, window_s),
        }

    def _series(self, by_start: dict[int, Slice], window_s: float) -> list[dict[str, Any]]:
        """The whole window in at most MAX_POINTS equal slots (whole minutes), quiet ones as zeros, so
        a chart's x axis is time."""
        slot = 60 * max(1, math.ceil(window_s / 60 / MAX_POINTS))
        end = int(self._clock() // 60 * 60) + 60
        count = max(1, math.ceil(window_s / slot))
        first = end - count * slot
        points = [{"t": first + i * slot, "requests": 0, "classified": 0, "matched": 0} for i in range(count)]
        for start, m in by_start.items():
            i = (start - first) // slot
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
