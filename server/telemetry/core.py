"""What happened to each request, in one record that feeds both the Prometheus metrics and the request
log, so the two never disagree.

A handler opens a record (`with telemetry.request("Route") as rec:`), the parts fill it as the request
goes (server/classify/classifier.py `record_classified`, server/routing/plan.py `record_planned`,
server/chat/route.py `record_routed`, server/targets/forward.py `record_served`: telemetry knows none
of their types) and the record is finished when the block ends: OK, or the gRPC status name of the
error that ended it. The batcher reports batches and rejections here too (BatchObserver).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from models import ChatMessage
from server.config import TelemetrySection
from server.errors import TargetUnavailable, TaskRouterError
from server.telemetry.metrics import Metrics
from server.telemetry.recent import RecentTraffic
from server.telemetry.request_log import RequestLog
from server.telemetry.shared_metrics import SharedMetrics

OK = "OK"
_ERROR_CHARS = 300
# Every `api` a request record carries (the fronts open records under these names; the offline
# analysis reads them back): one list, so the two cannot drift apart.
CLASSIFYING_APIS = ("Classify", "ClassifyBatch", "Route", "Chat", "chat.completions", "console.route")
# Calls a model answered (what is billed), and calls that only planned a route (Route, the console's
# Playground): kept apart wherever traffic is counted as served.
SERVED_APIS = ("Chat", "chat.completions")
PLANNED_APIS = ("Route", "console.route")
# How an attempt at a model ended, as the forwarder writes it: "ok", "skipped: <why>" (never sent),
# or the failure ("timeout", "HTTP 503", ...).
ATTEMPT_OK = "ok"
SKIPPED = "skipped"


def attempt_failed(outcome: str) -> bool:
    """Was the attempt sent and did it fail (not answered, not skipped)?"""
    return outcome != ATTEMPT_OK and not outcome.startswith(SKIPPED)


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, TaskRouterError):
        return exc.code.name
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL"


def _error_kind(outcome: str) -> str:
    """A failed attempt's reason as a bounded label: http_503, timeout, connection, other."""
    if outcome.startswith("HTTP "):
        return "http_" + outcome[5:].split()[0]
    for kind in ("timeout", "connection"):
        if kind in outcome:
            return kind
    return "other"


@dataclass
class RequestRecord:
    api: str  # Classify, ClassifyBatch, Route, Chat (gRPC) or chat.completions (HTTP)
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    outcome: str = OK
    error: str | None = None
    router: str = ""
    task: str = ""
    matched: bool | None = None
    confidence: float | None = None
    input_tokens: int | None = None
    tokenize_ms: float | None = None
    queue_ms: float | None = None
    inference_ms: float | None = None
    batch_size: int | None = None
    candidates: tuple[str, ...] = ()
    policy: str = ""
    model: str = ""
    pinned: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    cost_estimated: bool = False  # Route: priced from token estimates, nothing was called
    tool_calls: list[str] = field(default_factory=list)  # names of the tools the answer called
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fallback_taken: bool = False
    streamed: bool = False
    target_ms: float | None = None  # the answering model: time to first event (streamed) or whole answer
    messages: Sequence[ChatMessage] = ()
    finished: bool = False
    handed_over: bool = False  # a stream that outlives its handler finishes the record (Telemetry.hand_over)

    def to_json(self, latency_ms: float, with_prompt: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": round(self.wall, 3),
            "api": self.api,
            "outcome": self.outcome,
            "latency_ms": round(latency_ms, 3),
        }
        optional = {
            "error": self.error,
            "router": self.router or None,
            "task": self.task or None,
            "matched": self.matched,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "input_tokens": self.input_tokens,
            "tokenize_ms": self.tokenize_ms,
            "queue_ms": self.queue_ms,
            "inference_ms": self.inference_ms,
            "batch_size": self.batch_size,
            "candidates": list(self.candidates) or None,
            "policy": self.policy or None,
            "model": self.model or None,
            "pinned": self.pinned or None,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "cost_estimated": self.cost_estimated if self.cost_usd is not None else None,
            "attempts": self.attempts or None,
            "tool_calls": self.tool_calls or None,
            "fallback_taken": self.fallback_taken or None,
            "target_ms": self.target_ms,
            "streamed": self.streamed or None,
        }
        for key, value in optional.items():
            if value is not None:
                out[key] = round(value, 3) if isinstance(value, float) and key.endswith("_ms") else value
        if with_prompt and self.messages:
            out["messages"] = [{"role": m.role, "content": m.content} for m in self.messages]
        return out


class Telemetry:
    """Metrics and the request log of one service process."""

    def __init__(self, cfg: TelemetrySection) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.recent = RecentTraffic()
        # With several workers, every scrape answers for all of them (server/telemetry/shared_metrics.py).
        self.shared = (
            SharedMetrics(cfg.metrics_dir, self.metrics.registry, self.recent.export)
            if cfg.metrics_dir
            else None
        )
        self.log = RequestLog(cfg.request_log) if cfg.request_log is not None else None
        # (router, task) -> (completion tokens, answers): what Evaluate prices a task's answers at
        self._output_tokens: dict[tuple[str, str], tuple[int, int]] = {}

    @contextlib.contextmanager
    def request(self, api: str, started: float | None = None) -> Iterator[RequestRecord]:
        """The one way a request's record lives: opened here, filled by the parts, finished when the block
        ends (with the error's status if one ends it), unless handed over to a stream that outlives the
        block (`hand_over`). `started`: when the request arrived, if before the block."""
        record = RequestRecord(api)
        if started is not None:
            record.started = started
        try:
            yield record
        except BaseException as exc:
            self.fail(record, exc)
            self.finish(record)
            raise
        if not record.handed_over:
            self.finish(record)

    @staticmethod
    def hand_over(record: RequestRecord) -> RequestRecord:
        """The caller now owns the record: it must `finish` it (a streamed answer, when the stream ends)."""
        record.handed_over = True
        return record

    def fail(self, record: RequestRecord, exc: BaseException) -> None:
        record.outcome = _outcome(exc)
        record.error = str(exc)[:_ERROR_CHARS] if isinstance(exc, TaskRouterError) else type(exc).__name__
        if isinstance(exc, TargetUnavailable) and not record.attempts:  # every candidate failed
            record.attempts = [
                {"model": a["model"], "outcome": a["outcome"], "ms": round(a["ms"], 3)} for a in exc.attempts
            ]

    def finish(self, record: RequestRecord) -> None:
        """Count and log the request once (later calls do nothing)."""
        if record.finished:
            return
        record.finished = True
        seconds = time.perf_counter() - record.started
        m = self.metrics
        m.requests.labels(record.api, record.router, record.task, record.model, record.outcome).inc()
        m.request_seconds.labels(record.api).observe(seconds)
        if record.matched is not None:
            m.classifications.labels(record.router, record.task, str(record.matched).lower()).inc()
            if record.confidence is not None:
                m.confidence.labels(record.router).observe(record.confidence)
        if record.tokenize_ms is not None:
            m.tokenize_seconds.observe(record.tokenize_ms / 1e3)
        if record.queue_ms is not None:
            m.queue_seconds.observe(record.queue_ms / 1e3)
        self._targets(record)
        actual_cost = None if record.cost_estimated else record.cost_usd
        self.recent.add(
            record.outcome == OK,
            seconds * 1e3,
            record.router,
            record.task,
            record.matched,
            record.model,
            actual_cost,
            served=record.api not in PLANNED_APIS,
        )
        if self.log is not None:
            self.log.write(record.to_json(seconds * 1e3, self.cfg.log_prompts))

    def _targets(self, record: RequestRecord) -> None:
        m = self.metrics
        for attempt in record.attempts:
            outcome = attempt["outcome"]
            if attempt_failed(outcome):
                m.target_errors.labels(attempt["model"], _error_kind(outcome)).inc()
        if not record.attempts or record.outcome != OK:
            return
        if record.fallback_taken:
            m.fallbacks.labels(record.router, record.model).inc()
        if record.target_ms is not None:
            histogram = m.ttft_seconds if record.streamed else m.target_seconds
            histogram.labels(record.model).observe(record.target_ms / 1e3)
        if record.cost_usd is not None and not record.cost_estimated:
            if record.completion_tokens is not None and record.task:
                total, count = self._output_tokens.get((record.router, record.task), (0, 0))
                self._output_tokens[(record.router, record.task)] = (
                    total + record.completion_tokens,
                    count + 1,
                )
            m.tokens.labels(record.model, "prompt").inc(record.prompt_tokens or 0)
            m.tokens.labels(record.model, "completion").inc(record.completion_tokens or 0)
            m.cost_usd.labels(record.router, record.model).inc(record.cost_usd)

    # ---- BatchObserver: called by the batcher ----------------------------------------------------

    def batch(self, size: int, seconds: float, failed: bool) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference_seconds.observe(seconds)
        if failed:
            self.metrics.batch_failures.inc()

    def rejected(self, reason: str) -> None:
        self.metrics.rejections.labels(reason).inc()

    def output_tokens(self, router: str, task: str) -> float | None:
        """Mean completion tokens of the answers this process served for a router's task, if any."""
        total, count = self._output_tokens.get((router, task), (0, 0))
        return total / count if count else None

    def render_metrics(self) -> bytes:
        return self.shared.render() if self.shared is not None else self.metrics.render()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.shared is not None:
            self.shared.close()
