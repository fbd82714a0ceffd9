"""The numbers of a request-log report, computed from the log's lines alone (plus catalogue prices for
the single-model baseline). No plotting here: server/analyze/report.py draws these."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from server.targets import Catalog
from server.telemetry import CLASSIFYING_APIS, PLANNED_APIS, SERVED_APIS, attempt_failed


def read_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, lines skipped). A line cut short by a crash or a rotation is skipped, not fatal."""
    records, skipped = [], 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if isinstance(record, dict) and "ts" in record and "api" in record:
                records.append(record)
            else:
                skipped += 1
    records.sort(key=lambda r: r["ts"])
    return records, skipped


def parse_time(value: str) -> float:
    """Epoch seconds, or an ISO 8601 time (UTC unless it names a zone): 2026-12-01T09:00."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time: epoch seconds or ISO 8601 (2026-12-01T09:00)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def select(
    records: Iterable[dict[str, Any]],
    router: str | None = None,
    api: Sequence[str] = (),
    since: float | None = None,
    until: float | None = None,
) -> list[dict[str, Any]]:
    """The records of one router, of some APIs, within [since, until)."""
    return [
        r
        for r in records
        if (router is None or r.get("router") == router)
        and (not api or r["api"] in api)
        and (since is None or r["ts"] >= since)
        and (until is None or r["ts"] < until)
    ]


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": len(a), "p50": p50, "p90": p90, "p99": p99, "max": float(a.max()), "mean": float(a.mean())}


@dataclass
class Bucket:
    start: float
    requests: int = 0
    classified: int = 0
    matched: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def match_rate(self) -> float | None:
        return self.matched / self.classified if self.classified else None


@dataclass
class Cost:
    baseline_model: str
    priced: int  # requests with token counts, the ones compared
    routed_usd: float
    baseline_usd: float
    estimated: int  # of `priced`, how many are Route estimates (nothing was called)
    by_model: dict[str, float]
    cumulative: list[tuple[float, float, float]]  # (ts, routed so far, baseline so far)

    @property
    def saving(self) -> float | None:
        return 1 - self.routed_usd / self.baseline_usd if self.baseline_usd > 0 else None


@dataclass
class Stats:
    first_ts: float
    last_ts: float
    requests: int
    skipped_lines: int
    outcomes: Counter[str]
    apis: Counter[str]
    routers: Counter[str]
    tasks: Counter[tuple[str, str]]  # (router, task)
    models: Counter[str]  # served: the model that answered (Chat, chat.completions)
    planned_models: Counter[str]  # planned only: Route and the console's Playground (nothing was called)
    classified: int
    matched: int
    confidence: list[float]
    latency: dict[str, dict[str, float]]  # api -> percentiles
    stages: dict[str, dict[str, float]]  # tokenize/queue/inference -> percentiles
    target_ms: dict[str, dict[str, float]]  # model -> percentiles of TTFT / answer time
    target_errors: Counter[tuple[str, str]]  # (model, outcome)
    fallbacks_taken: int
    buckets: list[Bucket]
    bucket_s: float
    cost: Cost | None

    @property
    def match_rate(self) -> float | None:
        return self.matched / self.classified if self.classified else None


def _bucket_seconds(span_s: float) -> float:
    """A round bucket width giving about 20-60 points over the span."""
    for width in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400):
        if span_s / width <= 60:
            return float(width)
    return 7 * 86400.0


def _buckets(records: Sequence[dict[str, Any]], width: float) -> list[Bucket]:
    start = records[0]["ts"] // width * width
    count = int((records[-1]["ts"] - start) // width) + 1
    buckets = [Bucket(start + i * width) for i in range(count)]
    for r in records:
        b = buckets[int((r["ts"] - start) // width)]
        b.requests += 1
        if r["outcome"] != "OK":
            b.errors += 1
        if r.get("matched") is not None:
            b.classified += 1
            b.matched += bool(r["matched"])
        if r["outcome"] == "OK":
            b.latencies.append(r["latency_ms"])
    return buckets


def _cost(records: Iterable[dict[str, Any]], catalog: Catalog, baseline: str) -> Cost:
    model = catalog.models[baseline]
    routed = base = 0.0
    priced = estimated = 0
    by_model: Counter[str] = Counter()
    cumulative = []
    for r in records:
        if r.get("cost_usd") is None or r.get("prompt_tokens") is None:
            continue
        priced += 1
        estimated += bool(r.get("cost_estimated"))
        routed += r["cost_usd"]
        by_model[r.get("model") or "?"] += r["cost_usd"]
        base += model.cost_usd(r["prompt_tokens"], r.get("completion_tokens") or 0)
        cumulative.append((r["ts"], routed, base))
    return Cost(baseline, priced, routed, base, estimated, dict(by_model), cumulative)


def default_baseline(records: Iterable[dict[str, Any]], catalog: Catalog) -> str | None:
    """The priciest catalogue model the log's requests went to: what an operator would otherwise send
    everything to, so that no routed request would have been worse served."""
    used = {r["model"] for r in records if r.get("model") in catalog.models}
    if not used:
        return None
    return max(used, key=lambda m: catalog.models[m].cost_usd(1_000_000, 1_000_000))


def compute(records: Sequence[dict[str, Any]], skipped: int, catalog: Catalog, baseline: str | None) -> Stats:
    if not records:
        raise ValueError("the log has no requests")
    ok = [r for r in records if r["outcome"] == "OK"]
    classified = [r for r in records if r.get("matched") is not None]
    latency = {api: percentiles([r["latency_ms"] for r in ok if r["api"] == api]) for api in CLASSIFYING_APIS}
    stages = {
        stage: percentiles([r[f"{stage}_ms"] for r in ok if r.get(f"{stage}_ms") is not None])
        for stage in ("tokenize", "queue", "inference")
    }
    target_ms: dict[str, list[float]] = {}
    errors: Counter[tuple[str, str]] = Counter()
    for r in records:
        if r.get("target_ms") is not None and r["outcome"] == "OK":
            target_ms.setdefault(r["model"], []).append(r["target_ms"])
        for a in r.get("attempts") or []:
            if attempt_failed(a["outcome"]):
                errors[(a["model"], a["outcome"])] += 1
    span = records[-1]["ts"] - records[0]["ts"]
    width = _bucket_seconds(span)
    baseline = baseline or default_baseline(records, catalog)
    return Stats(
        first_ts=records[0]["ts"],
        last_ts=records[-1]["ts"],
        requests=len(records),
        skipped_lines=skipped,
        outcomes=Counter(r["outcome"] for r in records),
        apis=Counter(r["api"] for r in records),
        routers=Counter(r["router"] for r in classified),
        tasks=Counter((r["router"], r["task"]) for r in classified),
        models=Counter(r["model"] for r in ok if r.get("model") and r["api"] in SERVED_APIS),
        planned_models=Counter(r["model"] for r in ok if r.get("model") and r["api"] in PLANNED_APIS),
        classified=len(classified),
        matched=sum(bool(r["matched"]) for r in classified),
        confidence=[r["confidence"] for r in classified if r.get("confidence") is not None],
        latency={k: v for k, v in latency.items() if v},
        stages={k: v for k, v in stages.items() if v},
        target_ms={m: percentiles(v) for m, v in sorted(target_ms.items())},
        target_errors=errors,
        fallbacks_taken=sum(bool(r.get("fallback_taken")) for r in ok),
        buckets=_buckets(records, width),
        bucket_s=width,
        cost=_cost(records, catalog, baseline) if baseline is not None else None,
    )
