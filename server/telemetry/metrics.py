"""Prometheus metrics of one service process, served at `GET /metrics` on the HTTP port.

Every metric lives in this object's own registry (no process-wide globals), so tests and several
services in one process each count their own traffic. Label values come only from bounded sets: router
names that exist, their task names, catalogue models, gRPC status names. A request for an unknown router
is counted with router="" so callers cannot grow the series count.

Rates are left to PromQL, as Prometheus expects: the match rate is
    sum(rate(taskrouter_classifications_total{matched="true"}[5m]))
      / sum(rate(taskrouter_classifications_total[5m]))
(deploy/grafana-dashboard.json has the queries for every panel).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds, from a tokenizer call (~0.1 ms) to a slow model's first token (~10 s).
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5, 1, 2)
_SLOW = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_CONFIDENCE = tuple(round(0.1 * i, 1) for i in range(1, 11))


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "taskrouter_requests",
            "Requests by API, router, task, chosen model and outcome (OK or the gRPC status name). "
            "model is the first candidate for Route and the model that answered for Chat.",
            ["api", "router", "task", "model", "outcome"],
            registry=r,
        )
        self.classifications = Counter(
            "taskrouter_classifications",
            "Prompts classified, by router and task; matched=false is a fallback.",
            ["router", "task", "matched"],
            registry=r,
        )
        self.confidence = Histogram(
            "taskrouter_confidence",
            "The best task's match probability per classified prompt.",
            ["router"],
            buckets=_CONFIDENCE,
            registry=r,
        )
        self.request_seconds = Histogram(
            "taskrouter_request_seconds",
            "End to end inside the service, from arrival to the answer (Chat: to the last token).",
            ["api"],
            buckets=_FAST + (5, 10, 30, 60),
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            "taskrouter_tokenize_seconds", "Tokenizing one prompt.", buckets=_FAST, registry=r
        )
        self.queue_seconds = Histogram(
            "taskrouter_queue_seconds",
            "Waiting in the batcher before the prompt's batch starts.",
            buckets=_FAST,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "taskrouter_inference_seconds", "One classifier batch on the model.", buckets=_FAST, registry=r
        )
        self.batch_size = Histogram(
            "taskrouter_batch_size", "Prompts per classifier batch.", buckets=_BATCH, registry=r
        )
        self.batch_failures = Counter(
            "taskrouter_batch_failures",
            "Classifier batches that raised (each caller got INTERNAL).",
            registry=r,
        )
        self.rejections = Counter(
            "taskrouter_admission_rejections",
            "Requests refused with RESOURCE_EXHAUSTED by the batcher: reason queue_full (the count bound) "
            "or expected_wait (batching.max_queue_ms).",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "taskrouter_queue_depth", "Classifier requests admitted and not yet answered.", registry=r
        )
        self.stalled = Gauge(
            "taskrouter_classifier_stalled",
            "1 while the classifier is stalled (a batch running past telemetry.stall_after_s, or "
            "telemetry.stall_failed_batches failures in a row); health is NOT_SERVING meanwhile.",
            registry=r,
        )
        self.router_store_up = Gauge(
            "taskrouter_router_store_up",
            "1 while the router store answers; 0 while Redis (routers.store: redis) cannot be reached: "
            "the last good router set keeps serving and router changes answer UNAVAILABLE.",
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "taskrouter_target_ttft_seconds",
            "Time to the first streamed event from the model that answered.",
            ["model"],
            buckets=_SLOW,
            registry=r,
        )
        self.target_seconds = Histogram(
            "taskrouter_target_seconds",
            "A whole non-streamed answer from the model that answered.",
            ["model"],
            buckets=_SLOW,
            registry=r,
        )
        self.target_errors = Counter(
            "taskrouter_target_errors",
            "Failed attempts at a model: timeout, connect error, HTTP 429/5xx, or rejected (4xx).",
            ["model", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "taskrouter_fallbacks_taken",
            "Chats answered by a later candidate because an earlier one failed or was skipped.",
            ["router", "model"],
            registry=r,
        )
        self.tokens = Counter(
            "taskrouter_tokens",
            "Tokens of answered chats, by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=r,
        )
        self.cost_usd = Counter(
            "taskrouter_cost_usd",
            "Estimated cost of answered chats in USD, from the upstream's token counts and catalogue prices.",
            ["router", "model"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
