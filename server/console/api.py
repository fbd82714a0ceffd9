"""The JSON API behind the console page (`/console/api/*`), guarded like the admin API. Router CRUD
itself goes through the `/v2` control plane; these add what a person at the console needs: the
catalogue with live latencies, a playground answer with every score and candidate, evaluation of a
labelled file, and the recent-traffic summary."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request

from models import ChatMessage
from server.classify.classifier import Classified, classify, classify_many, record_classified
from server.classify.request import json_messages, lookup_router, validate_messages
from server.console.evaluate import Row, output_tokens_per_task, score
from server.console.jobs import Jobs
from server.errors import InvalidInput
from server.http.body import json_body
from server.routing.plan import plan, record_planned, request_tokens
from server.routing.registry import CompiledRouter
from server.runtime import Runtime
from server.targets.cost import Load, project

MAX_EVALUATE_ROWS = 5000
MAX_WINDOW_S = 24 * 3600


async def _json(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


class ConsoleApi:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.jobs = Jobs()

    def routes(self) -> APIRouter:
        api = APIRouter(prefix="/console/api")
        api.add_api_route("/catalog", self.catalog, methods=["GET"])
        api.add_api_route("/route", self.route, methods=["POST"])
        api.add_api_route("/evaluate", self.evaluate, methods=["POST"])
        api.add_api_route("/evaluate/jobs", self.start_evaluation, methods=["POST"])
        api.add_api_route("/evaluate/jobs/{job_id}", self.evaluation, methods=["GET"])
        api.add_api_route("/evaluate/jobs/{job_id}", self.cancel_evaluation, methods=["DELETE"])
        api.add_api_route("/analyze", self.analyze, methods=["GET"])
        return api

    def _model(self, name: str) -> dict[str, Any]:
        targets = self.runtime.targets
        info = targets.model(name)
        measured = targets.stats.snapshot(name)
        return {
            "model": name,
            "input_price_per_mtok": info.input_price_per_mtok,
            "output_price_per_mtok": info.output_price_per_mtok,
            "context_tokens": info.context_tokens,
            "pool": info.pool,
            "healthy": targets.healthy(name),
            "prior_ms": info.latency_ms,
            "measured_ttft_ms": measured["ttft_ms"],
            "measured_latency_ms": measured["latency_ms"],
        }

    async def catalog(self) -> dict[str, Any]:
        return {"models": [self._model(m) for m in sorted(self.runtime.targets.catalog.models)]}

    async def route(self, request: Request) -> dict[str, Any]:
        """Classify and plan one conversation, with everything the playground draws."""
        received = time.perf_counter()
        body = await _json(request)
        router = lookup_router(self.runtime.registry, str(body.get("router") or ""))
        messages = json_messages(body)
        validate_messages(messages, self.runtime.cfg.limits)
        with self.runtime.telemetry.request("console.route") as record:
            record.router, record.messages = router.spec.name, messages
            c = await classify(self.runtime.engine, self.runtime.batcher, router, messages, received)
            record_classified(record, c)
            tokens = request_tokens(messages, None, self.runtime.cfg.targets.default_output_tokens)
            planned = plan(self.runtime.targets, router, c.decision, tokens)
            record_planned(record, planned)
        candidates = []
        for name in planned.models:
            entry = self._model(name)
            entry["estimated_cost_usd"] = self.runtime.targets.model(name).cost_usd(*tokens)
            candidates.append(entry)
        return {
            "router": router.spec.name,
            "task": c.decision.task,
            "matched": c.decision.matched,
            "threshold": c.decision.threshold,
            "criterion": c.decision.criterion,
            "criterion_value": c.decision.criterion_value,
            "threshold_similarity": router.similarity_cut,
            "scores": [
                {"task": s.task, "score": s.score, "similarity": s.similarity} for s in c.decision.scores
            ],
            "policy": planned.policy,
            "candidates": candidates,
            "skipped": [{"model": s.model, "reason": s.reason} for s in planned.skipped],
            "estimated_tokens": {"input": tokens[0], "output": tokens[1]},
            "classifier_ms": (time.perf_counter() - received) * 1e3,
            "timing": {
                "tokenize_ms": c.tokenize_ms,
                "queue_ms": c.info.queue_ms,
                "inference_ms": c.info.inference_ms,
            },
        }

    async def evaluate(self, request: Request) -> dict[str, Any]:
        """{router, baseline, rows: [{text, label}], output_tokens?}: classify every row as the router
        would and answer when all are done (scripts); the console runs the same as a job."""
        run, _total = self._evaluation(await _json(request))
        return await run(None)

    async def start_evaluation(self, request: Request) -> dict[str, Any]:
        """The same body; answers at once with the job to poll (bad input is refused here, not later)."""
        run, total = self._evaluation(await _json(request))
        return self.jobs.start(total, run).view()

    async def evaluation(self, job_id: str) -> dict[str, Any]:
        return self.jobs.get(job_id).view()

    async def cancel_evaluation(self, job_id: str) -> dict[str, Any]:
        return self.jobs.cancel(job_id).view()

    def _evaluation(
        self, body: dict[str, Any]
    ) -> tuple[Callable[[Callable[[int], None] | None], Awaitable[dict[str, Any]]], int]:
        """Check an evaluation request; (the coroutine function that runs it, its row count)."""
        router = lookup_router(self.runtime.registry, str(body.get("router") or ""))
        baseline = body.get("baseline")
        catalog = self.runtime.targets.catalog
        if baseline not in catalog.models:
            raise InvalidInput(f"baseline {baseline!r} is not a catalogue model; known: {catalog.known()}")
        stated = body.get("output_tokens") or {}
        if not isinstance(stated, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1_000_000 for v in stated.values()
        ):
            raise InvalidInput("output_tokens must map task names to whole numbers of tokens (0 to 1000000)")
        rows = body.get("rows")
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("rows must be a non-empty list of {text, label}")
        if len(rows) > MAX_EVALUATE_ROWS:
            raise InvalidInput(f"{len(rows)} rows; at most {MAX_EVALUATE_ROWS} per evaluation")
        texts, labels = [], []
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
                raise InvalidInput(f"rows[{i}] must be an object with a non-empty string text")
            if not isinstance(row.get("label"), str) or not row["label"]:
                raise InvalidInput(f"rows[{i}].label must be a task name or 'fallback'")
            texts.append(row["text"])
            labels.append(row["label"])
        runtime = self.runtime
        outputs = output_tokens_per_task(
            router, stated, runtime.telemetry.output_tokens, runtime.cfg.targets.default_output_tokens
        )

        async def run(progress: Callable[[int], None] | None) -> dict[str, Any]:
            conversations = [[ChatMessage("user", t)] for t in texts]
            results = await classify_many(
                runtime.engine,
                runtime.batcher,
                [router] * len(conversations),
                conversations,
                slice_size=runtime.cfg.batching.max_batch_requests,
                progress=progress,
            )
            return self._scored(router, baseline, outputs, conversations, labels, results)

        return run, len(texts)

    def _scored(
        self,
        router: CompiledRouter,
        baseline: str,
        outputs: dict[str, dict[str, Any]],
        conversations: list[list[ChatMessage]],
        labels: list[str],
        results: list[Classified],
    ) -> dict[str, Any]:
        runtime = self.runtime
        catalog = runtime.targets.catalog
        base = catalog.models[baseline]
        scored, loads = [], []
        for messages, label, c in zip(conversations, labels, results, strict=True):
            decision = c.decision
            pool, _policy = router.pool(decision)
            tokens = request_tokens(messages, None, round(outputs[decision.task]["tokens"]))
            first = plan(runtime.targets, router, decision, tokens).models
            model = first[0] if first else pool[0]
            loads.append(Load(decision.task, model, 1, *tokens))
            best = decision.scores[0]
            routed = catalog.models[model].cost_usd(*tokens)
            scored.append(
                Row(label, decision.task, routed, base.cost_usd(*tokens), best.task, decision.criterion_value)
            )
        tasks = [t.name for t in router.spec.tasks]
        projection = project(loads, catalog, baseline)
        return {
            "router": router.spec.name,
            **score(scored, tasks, baseline, router.threshold, router.no_match.criterion),
            "output_tokens": outputs,
            "cost_by_task": [
                {
                    "task": r.task,
                    "requests": r.requests,
                    "models": list(r.models),
                    "routed_usd": r.routed_usd,
                    "baseline_usd": r.baseline_usd,
                    "saving": r.saving,
                }
                for r in projection.tasks
            ],
        }

    async def analyze(self, window_s: float = 900, router: str | None = None) -> dict[str, Any]:
        if not 0 < window_s <= MAX_WINDOW_S:
            raise InvalidInput(f"window_s is {window_s:g}; use 1 to {MAX_WINDOW_S} seconds")
        telemetry = self.runtime.telemetry
        others = telemetry.shared.others_recent() if telemetry.shared is not None else []
        summary = telemetry.recent.summary(window_s, router or None, others)  # every panel, every worker
        metrics = telemetry.metrics
        summary["since_start"] = {
            "rejections": sum(
                s.value for m in metrics.rejections.collect() for s in m.samples if s.name.endswith("_total")
            ),
            "stalled": bool(self.runtime.health.stalled),
            "router_store_up": self.runtime.health.store_up,
        }
        summary["workers"] = 1 + len(others)
        return summary
