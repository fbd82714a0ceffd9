"""The gRPC servicer: requests from protobuf into the domain calls (server/classify/classifier.py,
server/chat/session.py, the registry) and their answers back, with each request's record; how it
registers with the server (`add_to_server`, which turns undecodable messages into INVALID_ARGUMENT)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from models import ChatMessage
from server.chat.route import ChatRequest
from server.classify.classifier import Classified, classify, classify_many, record_classified
from server.classify.request import (
    check_batch,
    check_max_cost,
    check_temperature,
    conversation,
    lookup_router,
    validate_messages,
)
from server.errors import grpc_errors, grpc_stream_errors, tolerant
from server.routing.plan import plan, record_planned, request_tokens
from server.routing.registry import CompiledRouter
from server.routing.spec import RouterSpec, parse_router
from server.runtime import Runtime
from server.telemetry import RequestRecord
from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

_OUTPUT_ONLY = ("version", "create_time", "update_time", "uuid", "no_match")
_Input = pb.ClassifyRequest | pb.RouteRequest | pb.ChatRequest


def _ms(seconds: float) -> float:
    return seconds * 1e3


class Servicer(pb_grpc.TaskRouterServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # ---- protobuf in (the checks themselves: server/classify/request.py) ----------------------

    @staticmethod
    def _conversation(request: _Input, where: str = "") -> list[ChatMessage]:
        return conversation(request.prompt, [ChatMessage(m.role, m.content) for m in request.messages], where)

    def _messages(self, request: _Input, where: str = "") -> list[ChatMessage]:
        messages = self._conversation(request, where)
        validate_messages(messages, self.runtime.cfg.limits, where)
        return messages

    def _router(self, name: str, where: str = "") -> CompiledRouter:
        return lookup_router(self.runtime.registry, name, where)

    # ---- classification -----------------------------------------------------------------------

    @staticmethod
    def _response(c: Classified) -> pb.ClassifyResponse:
        decision, prompt, info, router = c.decision, c.prompt, c.info, c.router
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
            latency_ms=_ms(time.perf_counter() - c.received),
            timing=pb.Timing(
                tokenize_ms=c.tokenize_ms,
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
        c = await classify(self.runtime.engine, self.runtime.batcher, router, messages, received)
        record_classified(record, c)
        return c, self._response(c), messages

    @grpc_errors
    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        with self.runtime.telemetry.request("Classify") as record:
            return (await self._classify(request, record))[1]

    @grpc_errors
    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyBatchResponse:
        """One request record per prompt when the call succeeds; one for the call when it fails."""
        telemetry = self.runtime.telemetry
        received = time.perf_counter()
        try:
            results, conversations = await self._classify_batch(request, received)
        except BaseException:
            with telemetry.request("ClassifyBatch", started=received):
                raise
        responses = []
        for c, messages in zip(results, conversations, strict=True):
            with telemetry.request("ClassifyBatch", started=received) as record:
                record.messages = messages
                record_classified(record, c)
            responses.append(self._response(c))
        return pb.ClassifyBatchResponse(results=responses)

    async def _classify_batch(
        self, request: pb.ClassifyBatchRequest, received: float
    ) -> tuple[list[Classified], list[list[ChatMessage]]]:
        check_batch(len(request.requests), self.runtime.cfg.limits.max_batch_inputs)
        routers, conversations = [], []
        for i, entry in enumerate(request.requests):  # row by row: the first bad row is the one named
            routers.append(self._router(entry.router, f"requests[{i}]: "))
            conversations.append(self._messages(entry, f"requests[{i}]: "))
        runtime = self.runtime
        results = await classify_many(runtime.engine, runtime.batcher, routers, conversations, received)
        return results, conversations

    @grpc_errors
    async def Route(self, request: pb.RouteRequest, context: grpc.aio.ServicerContext) -> pb.RouteResponse:
        with self.runtime.telemetry.request("Route") as record:
            return self._route(request, *await self._classify(request, record), record)

    def _route(
        self,
        request: pb.RouteRequest,
        c: Classified,
        classification: pb.ClassifyResponse,
        messages: list[ChatMessage],
        record: RequestRecord,
    ) -> pb.RouteResponse:
        targets = self.runtime.targets
        tokens = request_tokens(messages, None, self.runtime.cfg.targets.default_output_tokens)
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
        with self.runtime.telemetry.request("Chat") as record:
            async for event in self._chat(request, record):
                yield event

    async def _chat(self, request: pb.ChatRequest, record: RequestRecord) -> AsyncIterator[pb.ChatEvent]:
        messages = self._conversation(request)  # routing validates it
        max_cost = check_max_cost(request.max_cost_usd if request.HasField("max_cost_usd") else None)
        temperature = check_temperature(request.temperature if request.HasField("temperature") else None)
        chat = self.runtime.chat
        asked = ChatRequest(
            request.model, messages, request.max_tokens or None, max_cost, request.affinity_key or None
        )
        routed = await chat.route(asked, record)
        body: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        streaming = await chat.stream(routed, body, record)
        try:
            yield pb.ChatEvent(
                start=pb.ChatStart(
                    router=routed.router or "",
                    task=routed.task or "",
                    model=streaming.model.name,
                    selection_policy=routed.plan.policy,
                    pinned=routed.pinned,
                    affinity_key=routed.affinity_key or "",
                )
            )
            async for event in streaming.events():
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield pb.ChatEvent(delta=text)
        finally:
            await streaming.close()
        bill = streaming.finish()
        yield pb.ChatEvent(
            end=pb.ChatEnd(
                finish_reason=streaming.finish_reason,
                prompt_tokens=bill["prompt_tokens"],
                completion_tokens=bill["completion_tokens"],
                cost_usd=bill["cost_usd"],
                attempts=[
                    pb.Attempt(model=a.model, endpoint=a.endpoint or "", outcome=a.outcome, ms=a.ms)
                    for a in streaming.attempts
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
        return parse_router(raw, self.runtime.registry.catalog)

    @grpc_errors
    async def CreateRouter(
        self, request: pb.CreateRouterRequest, context: grpc.aio.ServicerContext
    ) -> pb.Router:
        return self._to_proto(await self.runtime.registry.create(self._parse(request.router)))

    @grpc_errors
    async def UpdateRouter(
        self, request: pb.UpdateRouterRequest, context: grpc.aio.ServicerContext
    ) -> pb.Router:
        return self._to_proto(await self.runtime.registry.update(self._parse(request.router)))

    @grpc_errors
    async def GetRouter(self, request: pb.GetRouterRequest, context: grpc.aio.ServicerContext) -> pb.Router:
        return self._to_proto(self._router(request.name))

    @grpc_errors
    async def ListRouters(
        self, request: pb.ListRoutersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRoutersResponse:
        return pb.ListRoutersResponse(routers=[self._to_proto(r) for r in self.runtime.registry.list()])

    @grpc_errors
    async def DeleteRouter(
        self, request: pb.DeleteRouterRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteRouterResponse:
        self._router(request.name)
        await self.runtime.registry.delete(request.name)
        return pb.DeleteRouterResponse()


class _Recorder:
    """Catches the method handlers the generated add_*_to_server registers."""

    service = ""
    handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, handlers


def add_to_server(servicer: Servicer, server: grpc.aio.Server) -> None:
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
