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
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from models import ChatMessage
from server.app import App
from server.chat import ROUTER_PREFIX, Routed, attribution, record_routed
from server.errors import InvalidInput, TargetUnavailable
from server.forward import Attempt, record_served
from server.http.body import json_body
from server.targets import ModelInfo, UpstreamError
from server.telemetry import OK, RequestRecord

SELECTED_ROUTE = "x-model-router-selected-route"
AFFINITY = "x-model-affinity"


def _text(content: Any, where: str) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(str(p.get("text", "")) for p in parts)
    raise InvalidInput(f"{where}.content must be a string or a list of content parts")


def parse_messages(body: dict[str, Any]) -> list[ChatMessage]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a non-empty list of {role, content}")
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidInput(f"messages[{i}] must be an object with a string role")
        parsed.append(ChatMessage(message["role"], _text(message.get("content"), f"messages[{i}]")))
    return parsed


def _max_cost(request: Request) -> float | None:
    raw = request.headers.get("x-max-cost-usd")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:  # float() reads "nan" and "inf": a cap they would switch off
        raise InvalidInput(f"X-Max-Cost-USD is {raw!r}; use a positive, finite number of USD")
    return value


def _check_stream_fields(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidInput(f"stream is {stream!r}; use true or false")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidInput(f'stream_options is {options!r}; use an object such as {{"include_usage": true}}')


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"max_tokens is {value!r}; use a positive integer")
    return value


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
    def __init__(self, app: App) -> None:
        self.app = app

    def routes(self) -> APIRouter:
        api = APIRouter()
        api.add_api_route("/v1/models", self.list_models, methods=["GET"])
        api.add_api_route("/v1/chat/completions", self.chat, methods=["POST"])
        return api

    async def list_models(self) -> dict[str, Any]:
        created = int(time.time())
        routers = [f"{ROUTER_PREFIX}{r.spec.name}" for r in self.app.registry.list()]
        models = [m.name for m in self.app.targets.catalog.models.values() if m.pool is not None]
        entries = [
            {"id": name, "object": "model", "created": created, "owned_by": "taskrouter"}
            for name in routers + models
        ]
        return {"object": "list", "data": entries}

    async def chat(self, request: Request) -> Any:
        telemetry = self.app.telemetry
        record = telemetry.start("chat.completions")
        try:
            return await self._chat(request, record)
        except BaseException as exc:
            telemetry.fail(record, exc)
            raise
        finally:
            if not record.streamed:  # a stream's record ends with the stream (see _stream)
                telemetry.finish(record)

    async def _chat(self, request: Request, record: RequestRecord) -> Any:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object (an OpenAI chat-completions request)")
        model = body.get("model")
        messages = parse_messages(body)
        _check_stream_fields(body)
        record.messages = messages
        routed = await self.app.chats.route(
            model if isinstance(model, str) else "",
            messages,
            _max_tokens(body),
            _max_cost(request),
            request.headers.get(AFFINITY),
        )
        record_routed(record, routed)
        if body.get("stream"):
            return await self._stream(body, routed, record)
        plan = routed.plan
        info, answer, attempts = await self.app.forwarder.complete(plan.models, plan.skipped, body)
        await self.app.chats.served(routed, info.name)
        answer["model"] = info.name
        served = attribution(routed, info, answer.get("usage"), attempts)
        record_served(record, info.name, attempts, served, streamed=False)
        answer["taskrouter"] = served
        headers = _headers(routed, info, attempts)
        headers["x-model-router-cost-usd"] = f"{served['cost_usd']:.10f}"
        return JSONResponse(answer, headers=headers)

    async def _stream(self, body: dict[str, Any], routed: Routed, record: RequestRecord) -> StreamingResponse:
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        info, stream, attempts = await self.app.forwarder.stream(
            routed.plan.models, routed.plan.skipped, body
        )
        try:
            await self.app.chats.served(routed, info.name)
        except BaseException:  # cancelled or the pin store failed: free the endpoint slot first
            await stream.close()
            raise
        # From here the stream ends the record.
        record_served(record, info.name, attempts, None, streamed=True)
        telemetry = self.app.telemetry

        async def sse() -> AsyncIterator[bytes]:
            usage = None
            try:
                async for event in stream.events():
                    event["model"] = info.name
                    if event.get("usage"):
                        usage = event["usage"]
                    if not event.get("choices") and event.get("usage"):
                        if not wants_usage:
                            continue
                        event["taskrouter"] = attribution(routed, info, usage, attempts)
                    yield f"data: {json.dumps(event)}\n\n".encode()
            except UpstreamError as exc:
                error = {"message": f"model {info.name!r}: {exc.reason}", "type": "upstream_error"}
                record.outcome, record.error = TargetUnavailable.code.name, error["message"]
                yield f"data: {json.dumps({'error': error})}\n\n".encode()
                return
            except BaseException as exc:  # the client went away mid-stream
                telemetry.fail(record, exc)
                raise
            finally:
                await stream.close()
                if record.outcome != OK:
                    telemetry.finish(record)
            served = attribution(routed, info, usage, attempts)
            record_served(record, info.name, attempts, served, streamed=True)
            telemetry.finish(record)
            yield f": taskrouter {json.dumps(served)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        async def close() -> None:
            await stream.close()
            telemetry.finish(record)  # no-op when the body ran; counts a stream that never started

        # close() is idempotent; the background task also frees the slot if the body never started.
        return StreamingResponse(
            sse(),
            media_type="text/event-stream",
            headers=_headers(routed, info, attempts),
            background=BackgroundTask(close),
        )
