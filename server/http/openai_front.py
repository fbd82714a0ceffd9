"""`POST /v1/chat/completions` and `GET /v1/models`, OpenAI-compatible, so the `openai` client works
unchanged. `model: router:<name>` classifies the conversation and forwards it along the policy's
fallback chain; a plain catalogue model name is forwarded as is; `X-Model-Affinity: <key>` pins a
conversation to one model.

Attribution (task, model, tokens, estimated cost, every attempt) comes back as `x-model-router-*`
headers and, for non-streamed answers, a `taskrouter` field in the body; for streams, in the usage
chunk when the caller asked for one (`stream_options.include_usage`) and always in a final SSE
comment line (`: taskrouter {...}`), which SSE clients ignore."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from server.chat.route import ROUTER_PREFIX, ChatRequest, Routed
from server.chat.session import Streaming
from server.classify.request import (
    check_stream_fields,
    check_tool_fields,
    header_max_cost,
    json_max_tokens,
    json_messages,
)
from server.errors import InvalidInput, TargetUnavailable
from server.http.body import json_body
from server.runtime import Runtime
from server.targets import ModelInfo
from server.targets.forward import Attempt
from server.telemetry import OK, RequestRecord

SELECTED_ROUTE = "x-model-router-selected-route"
AFFINITY = "x-model-affinity"


def _headers(routed: Routed, model: ModelInfo, attempts: list[Attempt]) -> dict[str, str]:
    headers = {
        "x-model-router-model": model.name,
        "x-model-router-policy": routed.plan.policy,
        "x-model-router-attempts": str(len(attempts)),
        "x-model-router-pinned": "true" if routed.pinned else "false",
    }
    if routed.task is not None:
        headers[SELECTED_ROUTE] = routed.task
    if routed.affinity_key is not None:
        headers[AFFINITY] = routed.affinity_key
    return headers


class OpenAIFront:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def routes(self) -> APIRouter:
        api = APIRouter()
        api.add_api_route("/v1/models", self.list_models, methods=["GET"])
        api.add_api_route("/v1/chat/completions", self.chat, methods=["POST"])
        return api

    async def list_models(self) -> dict[str, Any]:
        created = int(time.time())
        routers = [f"{ROUTER_PREFIX}{r.spec.name}" for r in self.runtime.registry.list()]
        models = [m.name for m in self.runtime.targets.catalog.models.values() if m.pool is not None]
        entries = [
            {"id": name, "object": "model", "created": created, "owned_by": "taskrouter"}
            for name in routers + models
        ]
        return {"object": "list", "data": entries}

    async def chat(self, request: Request) -> Any:
        with self.runtime.telemetry.request("chat.completions") as record:
            return await self._chat(request, record)  # a stream's record ends with the stream (see _sse)

    async def _chat(self, request: Request, record: RequestRecord) -> Any:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object (an OpenAI chat-completions request)")
        model = body.get("model")
        messages = json_messages(body)
        check_stream_fields(body)
        check_tool_fields(body)
        chat = self.runtime.chat
        asked = ChatRequest(
            model if isinstance(model, str) else "",
            messages,
            json_max_tokens(body),
            header_max_cost(request.headers.get("x-max-cost-usd")),
            request.headers.get(AFFINITY),
        )
        routed = await chat.route(asked, record)
        if body.get("stream"):
            streaming = await chat.stream(routed, body, record)
            return self._sse(streaming, bool((body.get("stream_options") or {}).get("include_usage")), record)
        done = await chat.complete(routed, body, record)
        done.answer["taskrouter"] = done.bill
        headers = _headers(routed, done.model, done.attempts)
        headers["x-model-router-cost-usd"] = f"{done.bill['cost_usd']:.10f}"
        return JSONResponse(done.answer, headers=headers)

    def _sse(self, streaming: Streaming, wants_usage: bool, record: RequestRecord) -> StreamingResponse:
        """From here the stream ends the record."""
        telemetry = self.runtime.telemetry
        telemetry.hand_over(record)

        async def sse() -> AsyncIterator[bytes]:
            try:
                async for event in streaming.events():
                    if not event.get("choices") and event.get("usage"):
                        if not wants_usage:
                            continue
                        event["taskrouter"] = streaming.attribution()
                    yield f"data: {json.dumps(event)}\n\n".encode()
            except TargetUnavailable as exc:  # broke after the first event: an error event ends it
                telemetry.fail(record, exc)
                error = {"message": str(exc), "type": "upstream_error"}
                yield f"data: {json.dumps({'error': error})}\n\n".encode()
                return
            except BaseException as exc:  # the client went away mid-stream
                telemetry.fail(record, exc)
                raise
            finally:
                await streaming.close()
                if record.outcome != OK:
                    telemetry.finish(record)
            bill = streaming.finish()
            telemetry.finish(record)
            yield f": taskrouter {json.dumps(bill)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        async def close() -> None:
            await streaming.close()
            telemetry.finish(record)  # no-op when the body ran; counts a stream that never started

        # close() is idempotent; the background task also frees the slot if the body never started.
        return StreamingResponse(
            sse(),
            media_type="text/event-stream",
            headers=_headers(streaming.routed, streaming.model, streaming.attempts),
            background=BackgroundTask(close),
        )
