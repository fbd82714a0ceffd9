"""The fallback chain: send a chat request to the planned models in order until one answers.

Before the first token reaches the caller, a timeout, connection error, 429 or 5xx moves on to the next
candidate (and counts against that endpoint's circuit breaker). After it, nothing is replayed: a broken
stream ends with an error event, so the caller never sees duplicated output. Every attempt is recorded
and reported with the answer (the attribution of who served it: server/chat/session.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from server.errors import OverBudget, TargetUnavailable, UpstreamRejected
from server.routing.policies import Skip
from server.targets import Endpoint, ModelInfo, Targets, UpstreamError
from server.targets import upstream as protocol
from server.telemetry import ATTEMPT_OK, SKIPPED, RequestRecord

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    model: str
    endpoint: str | None
    outcome: str  # "ok", "timeout", "HTTP 503", "skipped: unhealthy", ...
    ms: float


def describe(attempts: Sequence[Attempt]) -> str:
    return ", ".join(f"{a.model} ({a.outcome})" for a in attempts) or "no candidates"


# vLLM answers a request with tools 400 unless it was started for tool calling.
TOOLS_HINT = (
    "the request carries tools: a vLLM target needs `--enable-auto-tool-choice --tool-call-parser <parser>` "
    "(the parser matching the model's chat template, e.g. hermes, llama3_json, mistral) to accept them"
)


def rejection_hint(body: dict[str, Any], exc: UpstreamError) -> str:
    """What taskrouter knows of why a model refused a request, for the caller; "" when nothing."""
    if body.get("tools") and exc.status == 400 and "tool" in str(exc.body).lower():
        return TOOLS_HINT
    return ""


class Forwarder:
    def __init__(self, targets: Targets) -> None:
        self.targets = targets

    def _body(self, body: dict[str, Any], model: ModelInfo, stream: bool) -> dict[str, Any]:
        out = dict(body)  # only top-level keys change; the messages are shared, not copied
        out["model"] = model.upstream_name
        out["stream"] = stream
        if stream:
            # Ask for the usage chunk at the end: the attribution (tokens, cost) comes from it.
            out["stream_options"] = {**(out.get("stream_options") or {}), "include_usage": True}
        return out

    async def _try_each(
        self,
        models: Sequence[str],
        skipped: Sequence[Skip],
        call: Callable[[Endpoint, ModelInfo], Awaitable[T]],
        body: dict[str, Any],
    ) -> tuple[ModelInfo, Endpoint, T, list[Attempt]]:
        attempts = [Attempt(s.model, None, f"{SKIPPED}: {s.reason}", 0.0) for s in skipped]
        for name in models:
            info = self.targets.model(name)
            pool = self.targets.pool_of(name)
            endpoint = pool.pick() if pool is not None else None
            if endpoint is None:
                reason = "no pool configured" if pool is None else "no endpoint available"
                attempts.append(Attempt(name, None, f"{SKIPPED}: {reason}", 0.0))
                continue
            endpoint.breaker.begin()
            endpoint.outstanding += 1
            started = time.perf_counter()
            try:
                result = await call(endpoint, info)
            except UpstreamError as exc:
                endpoint.outstanding -= 1
                ms = (time.perf_counter() - started) * 1e3
                attempts.append(Attempt(name, endpoint.base_url, exc.reason, ms))
                if not exc.retryable:
                    endpoint.breaker.success()  # it answered; the request itself was refused
                    raise UpstreamRejected(
                        exc.status or 502, exc.body, name, rejection_hint(body, exc)
                    ) from exc
                endpoint.breaker.failure()
                continue
            except BaseException:
                # The caller went away (cancelled, past its deadline) mid-attempt: release the slot and
                # the half-open trial it took, or the endpoint stays out of rotation until restart.
                endpoint.outstanding -= 1
                endpoint.breaker.abandon()
                raise
            ms = (time.perf_counter() - started) * 1e3
            endpoint.breaker.success()
            attempts.append(Attempt(name, endpoint.base_url, ATTEMPT_OK, ms))
            return info, endpoint, result, attempts
        # Nothing was even tried and the cap is why some were left out: a bigger cap would help.
        tried = any(a.endpoint is not None for a in attempts)
        if not tried and any(s.over_budget for s in skipped):
            raise OverBudget(f"no candidate model fits the cost cap: {describe(attempts)}")
        raise TargetUnavailable(
            f"every candidate model failed: {describe(attempts)}", [asdict(a) for a in attempts]
        )

    async def complete(
        self, models: Sequence[str], skipped: Sequence[Skip], body: dict[str, Any]
    ) -> tuple[ModelInfo, dict[str, Any], list[Attempt]]:
        client, timeouts = self.targets.client, self.targets.timeouts
        assert client is not None

        async def call(endpoint: Endpoint, info: ModelInfo) -> dict[str, Any]:
            return await protocol.complete(client, endpoint, self._body(body, info, False), timeouts)

        info, endpoint, answer, attempts = await self._try_each(models, skipped, call, body)
        endpoint.outstanding -= 1
        self.targets.stats.record_latency(info.name, attempts[-1].ms)
        return info, answer, attempts

    async def stream(
        self, models: Sequence[str], skipped: Sequence[Skip], body: dict[str, Any]
    ) -> tuple[ModelInfo, ForwardedStream, list[Attempt]]:
        """The model that answered, its open stream (first event already in), and the attempts."""
        client, timeouts = self.targets.client, self.targets.timeouts
        assert client is not None

        async def call(endpoint: Endpoint, info: ModelInfo) -> protocol.Stream:
            return await protocol.open_stream(client, endpoint, self._body(body, info, True), timeouts)

        info, endpoint, upstream, attempts = await self._try_each(models, skipped, call, body)
        self.targets.stats.record_ttft(info.name, attempts[-1].ms)
        return info, ForwardedStream(endpoint, upstream), attempts


class ForwardedStream:
    """The events of a committed stream. Always `close()` it (it frees the endpoint's slot)."""

    def __init__(self, endpoint: Endpoint, upstream: protocol.Stream) -> None:
        self._endpoint = endpoint
        self._upstream = upstream
        self._closed = False

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Raises UpstreamError(retryable=False) if the stream breaks after the first event."""
        yield self._upstream.first
        try:
            async for event in self._upstream.rest():
                yield event
        except UpstreamError:
            self._endpoint.breaker.failure()
            raise

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._endpoint.outstanding -= 1
            await self._upstream.close()


def record_served(
    record: RequestRecord,
    model: str,
    attempts: Sequence[Attempt],
    bill: dict[str, Any] | None,
    streamed: bool,
) -> None:
    """The model that answered, every attempt, and the attribution (tokens, cost) once known."""
    record.model = model
    record.streamed = streamed
    record.attempts = [{"model": a.model, "outcome": a.outcome, "ms": round(a.ms, 3)} for a in attempts]
    record.fallback_taken = len(attempts) > 1
    record.target_ms = attempts[-1].ms if attempts else None
    if bill is not None:
        record.prompt_tokens = bill["prompt_tokens"]
        record.completion_tokens = bill["completion_tokens"]
        record.cost_usd = bill["cost_usd"]
        record.cost_estimated = False
        record.tool_calls = list(bill.get("tool_calls") or [])
