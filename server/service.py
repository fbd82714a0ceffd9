"""The gRPC servicer: requests from protobuf into the domain calls (server/pipeline.py, server/chat.py,
the registry) and their answers back, with each request's record; how it registers with the server
(`add_to_server`, which turns undecodable messages into INVALID_ARGUMENT)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import json_format

from models import ChatMessage, PromptInput
from server.app import App
from server.batching import BatchInfo
from server.chat import attribution, record_routed
from server.errors import InvalidInput, TargetUnavailable, grpc_errors, grpc_stream_errors, tolerant
from server.forward import record_served
from server.pipeline import (
    Classified,
    classify,
    lookup_router,
    plan,
    record_classified,
    record_planned,
    request_tokens,
    validate_messages,
)
from server.registry import CompiledRouter, Decision
from server.routers import RouterSpec, parse_router
from server.targets import UpstreamError
from server.telemetry import RequestRecord
from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

_OUTPUT_ONLY = ("version", "create_time", "update_time", "uuid", "no_match")
_Input = pb.ClassifyRequest | pb.RouteRequest | pb.ChatRequest


def _ms(seconds: float) -> float:
    return seconds * 1e3


class TaskRouterService(pb_grpc.TaskRouterServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    # ---- request validation -------------------------------------------------------------------

    @staticmethod
    def _conversation(request: _Input, where: str = "") -> list[ChatMessage]:
        if request.prompt and request.messages:
            raise InvalidInput(f"{where}set either prompt or messages, not both")
        if request.prompt:
            return [ChatMessage("user", request.prompt)]
        return [ChatMessage(m.role, m.content) for m in request.messages]

    def _messages(self, request: _Input, where: str = "") -> list[ChatMessage]:
        messages = self._conversation(request, where)
        validate_messages(messages, self.app.cfg.limits, where)
        return messages

    def _router(self, name: str, where: str = "") -> CompiledRouter:
        return lookup_router(self.app.registry, name, where)

    # ---- classification -----------------------------------------------------------------------

    def _response(
        self,
        router: CompiledRouter,
        decision: Decision,
        prompt: PromptInput,
        info: BatchInfo,
        tokenize_ms: float,
        received: float,
    ) -> pb.ClassifyResponse:
        return pb.ClassifyResponse(
            task=decision.task,
            matched=decision.matched,
            scores=[
                pb.TaskScore(task=s.task, score=s.score, similarity=s.similarity) for s in decision.scores
            ],
            threshold=decision.threshold,
            fallback_score=decision.fallback_score,
            criterion=decision.criterion,
            criterion_value=decision.criterion_value,
            truncated=prompt.truncated,
            input_tokens=prompt.n_tokens,
            latency_ms=_ms(time.perf_counter() - received),
            timing=pb.Timing(
                tokenize_ms=tokenize_ms,
                queue_ms=info.queue_ms,
                inference_ms=info.inference_ms,
                batch_size=info.size,
            ),
            router=router.spec.name,
            router_version=router.version,
        )

    async def _classify(
        self, request: _Input, record: RequestRecord
    ) -> tuple[Classified, pb.ClassifyResponse, list[ChatMessage]]:
        received = record.started
        router = self._router(request.router)
        record.router = router.spec.name
        messages = self._messages(request)
        record.messages = messages
        c = await classify(self.app.engine, self.app.batcher, router, messages, received)
        record_classified(record, c)
        return c, self._response(c.router, c.decision, c.prompt, c.info, c.tokenize_ms, c.received), messages

    @grpc_errors
    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        with self.app.telemetry.request("Classify") as record:
            return (await self._classify(request, record))[1]

    @grpc_errors
    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyBatchResponse:
        """One request record per prompt when the call succeeds; one for the call when it fails."""
        telemetry = self.app.telemetry
        received = time.perf_counter()
        try:
            return self._batch_response(*await self._classify_batch(request, received), received)
        except BaseException as exc:
            record = telemetry.start("ClassifyBatch")
            record.started = received
            telemetry.fail(record, exc)
            telemetry.finish(record)
            raise

    def _batch_response(
        self,
        routers: list[CompiledRouter],
        prompts: Sequence[PromptInput],
        conversations: list[list[ChatMessage]],
        results: list[tuple[Any, BatchInfo]],
        tokenize_ms: float,
        received: float,
    ) -> pb.ClassifyBatchResponse:
        telemetry = self.app.telemetry
        responses = []
        for router, prompt, messages, (sims, info) in zip(
            routers, prompts, conversations, results, strict=True
        ):
            decision = router.decide(sims)
            responses.append(self._response(router, decision, prompt, info, tokenize_ms, received))
            record = telemetry.start("ClassifyBatch")
            record.started, record.messages = received, messages
            record_classified(record, Classified(router, decision, prompt, info, tokenize_ms, received))
            telemetry.finish(record)
        return pb.ClassifyBatchResponse(results=responses)

    async def _classify_batch(
        self, request: pb.ClassifyBatchRequest, received: float
    ) -> tuple[list[CompiledRouter], Sequence[PromptInput], list[list[ChatMessage]], list[Any], float]:
        limit = self.app.cfg.limits.max_batch_inputs
        if not request.requests:
            raise InvalidInput(f"requests is empty; send 1 to {limit} requests")
        if len(request.requests) > limit:
            raise InvalidInput(f"{len(request.requests)} requests; at most {limit} per ClassifyBatch call")
        routers, conversations = [], []
        for i, entry in enumerate(request.requests):  # row by row: the first bad row is the one named
            routers.append(self._router(entry.router, f"requests[{i}]: "))
            conversations.append(self._messages(entry, f"requests[{i}]: "))
        # Tokenizing hundreds of prompts would stall the event loop; a worker thread does it.
        prompts: Sequence[PromptInput] = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: [
                self.app.engine.prepare(m, r.context) for m, r in zip(conversations, routers, strict=True)
            ],
        )
        tokenize_ms = _ms(time.perf_counter() - received)
        results = await self.app.batcher.submit_many(
            [(p, r.prototypes) for p, r in zip(prompts, routers, strict=True)], [p.n_tokens for p in prompts]
        )
        return routers, prompts, conversations, results, tokenize_ms

    @grpc_errors
    async def Route(self, request: pb.RouteRequest, context: grpc.aio.ServicerContext) -> pb.RouteResponse:
        with self.app.telemetry.request("Route") as record:
            return self._route(request, *await self._classify(request, record), record)

    def _route(
        self,
        request: pb.RouteRequest,
        c: Classified,
        classification: pb.ClassifyResponse,
        messages: list[ChatMessage],
        record: RequestRecord,
    ) -> pb.RouteResponse:
        targets = self.app.targets
        tokens = request_tokens(messages, None, self.app.cfg.targets.default_output_tokens)
        planned = plan(targets, c.router, c.decision, tokens)
        first = targets.model(planned.models[0]) if planned.models else None
        record_planned(record, planned, first, tokens)
        return pb.RouteResponse(
            classification=classification,
            models=planned.models,
            selection_policy=planned.policy,
            skipped=[pb.SkippedModel(model=s.model, reason=s.reason) for s in planned.skipped],
        )

    # ---- forwarding ---------------------------------------------------------------------------

    @grpc_stream_errors
    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        with self.app.telemetry.request("Chat") as record:
            async for event in self._chat(request, record):
                yield event

    async def _chat(self, request: pb.ChatRequest, record: RequestRecord) -> AsyncIterator[pb.ChatEvent]:
        messages = self._conversation(request)  # route() validates it
        if request.HasField("temperature") and not (
            math.isfinite(request.temperature) and request.temperature >= 0
        ):
            raise InvalidInput(f"temperature is {request.temperature!r}; use a finite number >= 0")
        record.messages = messages
        chats = self.app.chats
        routed = await chats.route(
            request.model,
            messages,
            request.max_tokens or None,
            request.max_cost_usd if request.HasField("max_cost_usd") else None,
            request.affinity_key or None,
        )
        record_routed(record, routed)
        body: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        if request.HasField("temperature"):
            body["temperature"] = request.temperature
        info, stream, attempts = await self.app.forwarder.stream(
            routed.plan.models, routed.plan.skipped, body
        )
        try:
            # As the HTTP front does: pin the conversation to the model that answered, then record it.
            await chats.served(routed, info.name)
            record_served(record, info.name, attempts, None, streamed=True)
            yield pb.ChatEvent(
                start=pb.ChatStart(
                    router=routed.router or "",
                    task=routed.task or "",
                    model=info.name,
                    selection_policy=routed.plan.policy,
                    pinned=routed.pinned,
                    affinity_key=routed.affinity_key or "",
                )
            )
            usage, finish = None, ""
            try:
                async for event in stream.events():
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield pb.ChatEvent(delta=text)
            except UpstreamError as exc:
                raise TargetUnavailable(
                    f"model {info.name!r}: {exc.reason}; the partial answer is not replayed elsewhere"
                ) from exc
        finally:
            await stream.close()
        served = attribution(routed, info, usage, attempts)
        record_served(record, info.name, attempts, served, streamed=True)
        yield pb.ChatEvent(
            end=pb.ChatEnd(
                finish_reason=finish,
                prompt_tokens=served["prompt_tokens"],
                completion_tokens=served["completion_tokens"],
                cost_usd=served["cost_usd"],
                attempts=[
                    pb.Attempt(model=a.model, endpoint=a.endpoint or "", outcome=a.outcome, ms=a.ms)
                    for a in attempts
                ],
            )
        )

    # ---- router management --------------------------------------------------------------------

    @staticmethod
    def _to_proto(router: CompiledRouter) -> pb.Router:
        message = json_format.ParseDict(router.spec.to_dict(), pb.Router())
        nm = router.no_match
        message.no_match.CopyFrom(
            pb.NoMatch(
                context=nm.context,
                criterion=nm.criterion,
                threshold=nm.threshold,
                threshold_source=nm.threshold_source,
                expected_fallback_precision=nm.fit.fallback_precision,
                expected_fallback_recall=nm.fit.fallback_recall,
                examples=nm.fit.examples,
                fallback_examples=nm.fit.fallback_examples,
            )
        )
        message.version = router.version
        message.uuid = router.uuid
        message.create_time.FromNanoseconds(int(router.create_time * 1e9))
        message.update_time.FromNanoseconds(int(router.update_time * 1e9))
        return message

    def _parse(self, message: pb.Router) -> RouterSpec:
        raw = json_format.MessageToDict(message, preserving_proto_field_name=True)
        for key in _OUTPUT_ONLY:
            raw.pop(key, None)
        return parse_router(raw, self.app.registry.catalog)

    @grpc_errors
    async def CreateRouter(
        self, request: pb.CreateRouterRequest, context: grpc.aio.ServicerContext
    ) -> pb.Router:
        return self._to_proto(await self.app.registry.create(self._parse(request.router)))

    @grpc_errors
    async def UpdateRouter(
        self, request: pb.UpdateRouterRequest, context: grpc.aio.ServicerContext
    ) -> pb.Router:
        return self._to_proto(await self.app.registry.update(self._parse(request.router)))

    @grpc_errors
    async def GetRouter(self, request: pb.GetRouterRequest, context: grpc.aio.ServicerContext) -> pb.Router:
        return self._to_proto(self._router(request.name))

    @grpc_errors
    async def ListRouters(
        self, request: pb.ListRoutersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRoutersResponse:
        return pb.ListRoutersResponse(routers=[self._to_proto(r) for r in self.app.registry.list()])

    @grpc_errors
    async def DeleteRouter(
        self, request: pb.DeleteRouterRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteRouterResponse:
        self._router(request.name)
        await self.app.registry.delete(request.name)
        return pb.DeleteRouterResponse()


class _Recorder:
    """Catches the method handlers the generated add_*_to_server registers."""

    service = ""
    handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, handlers


def add_to_server(servicer: TaskRouterService, server: grpc.aio.Server) -> None:
    """Register the servicer as the generated code does, with request deserializers that turn an
    undecodable message into INVALID_ARGUMENT (errors.Undecodable) instead of gRPC's UNKNOWN."""
    recorder = _Recorder()
    pb_grpc.add_TaskRouterServicer_to_server(servicer, recorder)
    methods = pb.DESCRIPTOR.services_by_name["TaskRouter"].methods_by_name
    handlers = {
        name: handler._replace(
            request_deserializer=tolerant(handler.request_deserializer, methods[name].input_type.name)
        )
        for name, handler in recorder.handlers.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(recorder.service, handlers),))
    server.add_registered_method_handlers(recorder.service, handlers)
