"""One chat exchange, written once for both fronts: route it (recording the classification and the
candidates), forward it along the fallback chain, pin the conversation to the model that answered,
attribute tokens and cost, and record what was served. The gRPC Chat RPC and the HTTP
`/v1/chat/completions` only translate requests in and these results out.

Order, the same on both fronts: a model answers -> the conversation is pinned to it -> the record
names it (streams: before the first event reaches the caller) -> the attribution completes the record
when the answer (or the stream) ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from server.chat.affinity import AffinityStore, Pin
from server.chat.route import ChatRequest, ChatRouting, Routed, record_routed
from server.errors import TargetUnavailable
from server.routing.spec import FALLBACK
from server.targets import ModelInfo, UpstreamError
from server.targets.forward import Attempt, ForwardedStream, Forwarder, record_served
from server.telemetry import RequestRecord


def tool_calls_of(answer: dict[str, Any]) -> list[str]:
    """The names of the tools a non-streamed answer calls, in order."""
    names = []
    for choice in answer.get("choices") or []:
        for call in (choice.get("message") or {}).get("tool_calls") or []:
            names.append(str((call.get("function") or {}).get("name") or "?"))
    return names


def attribution(
    routed: Routed,
    model: ModelInfo,
    usage: dict[str, Any] | None,
    attempts: Sequence[Attempt],
    tool_calls: Sequence[str] = (),
) -> dict[str, Any]:
    """Who served the request and what it cost, from the upstream's token counts and catalogue prices;
    the tools the answer called, if any."""
    prompt_tokens = int((usage or {}).get("prompt_tokens") or 0)
    completion_tokens = int((usage or {}).get("completion_tokens") or 0)
    return {
        "router": routed.router,
        "task": routed.task,
        "model": model.name,
        "pinned": routed.pinned,
        "affinity_key": routed.affinity_key,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": round(model.cost_usd(prompt_tokens, completion_tokens), 10),
        "attempts": [asdict(a) for a in attempts],
        "tool_calls": list(tool_calls),
    }


@dataclass(frozen=True)
class Completed:
    model: ModelInfo
    answer: dict[str, Any]  # the upstream's body, `model` set to the catalogue name
    attempts: list[Attempt]
    bill: dict[str, Any]  # the attribution: who served it, tokens, cost


class Streaming:
    """A committed stream: the model that answered and its events. Always `close()` it (it frees the
    endpoint's slot); `finish()` after the last event completes the record."""

    def __init__(
        self,
        routed: Routed,
        model: ModelInfo,
        stream: ForwardedStream,
        attempts: list[Attempt],
        record: RequestRecord,
    ) -> None:
        self.routed, self.model, self.attempts = routed, model, attempts
        self._stream, self._record = stream, record
        self.usage: dict[str, Any] | None = None
        self.finish_reason = ""
        self.tool_calls: dict[tuple[int, int], str] = {}  # (choice, call index) -> tool name

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The upstream's events as they come (`model` set to the catalogue name). A stream that breaks
        after its first event raises TargetUnavailable: nothing is replayed elsewhere."""
        try:
            async for event in self._stream.events():
                event["model"] = self.model.name
                self.usage = event.get("usage") or self.usage
                for choice in event.get("choices") or []:
                    self.finish_reason = choice.get("finish_reason") or self.finish_reason
                    for call in (choice.get("delta") or {}).get("tool_calls") or []:
                        # the name comes in the call's first delta; later deltas carry its arguments
                        name = (call.get("function") or {}).get("name")
                        if name:
                            self.tool_calls[(choice.get("index", 0), call.get("index", 0))] = name
                yield event
        except UpstreamError as exc:
            raise TargetUnavailable(
                f"model {self.model.name!r}: {exc.reason}; the partial answer is not replayed elsewhere"
            ) from exc

    def attribution(self) -> dict[str, Any]:
        calls = [self.tool_calls[k] for k in sorted(self.tool_calls)]
        return attribution(self.routed, self.model, self.usage, self.attempts, calls)

    def finish(self) -> dict[str, Any]:
        bill = self.attribution()
        record_served(self._record, self.model.name, self.attempts, bill, streamed=True)
        return bill

    async def close(self) -> None:
        await self._stream.close()


class ChatSessions:
    """Built once by the runtime from chat routing, the forwarder and the affinity store."""

    def __init__(self, routing: ChatRouting, forwarder: Forwarder, affinity: AffinityStore) -> None:
        self.routing = routing
        self.forwarder = forwarder
        self.affinity = affinity

    async def route(self, request: ChatRequest, record: RequestRecord) -> Routed:
        record.messages = request.messages
        routed = await self.routing.route(request)
        record_routed(record, routed)
        return routed

    async def complete(self, routed: Routed, body: dict[str, Any], record: RequestRecord) -> Completed:
        plan = routed.plan
        info, answer, attempts = await self.forwarder.complete(plan.models, plan.skipped, body)
        await self._pin(routed, info.name)
        answer["model"] = info.name
        bill = attribution(routed, info, answer.get("usage"), attempts, tool_calls_of(answer))
        record_served(record, info.name, attempts, bill, streamed=False)
        return Completed(info, answer, attempts, bill)

    async def stream(self, routed: Routed, body: dict[str, Any], record: RequestRecord) -> Streaming:
        plan = routed.plan
        info, stream, attempts = await self.forwarder.stream(plan.models, plan.skipped, body)
        try:
            await self._pin(routed, info.name)
        except BaseException:  # cancelled or the pin store failed: free the endpoint slot first
            await stream.close()
            raise
        record_served(record, info.name, attempts, None, streamed=True)
        return Streaming(routed, info, stream, attempts, record)

    async def _pin(self, routed: Routed, model: str) -> None:
        """Pin (or re-pin, if a fallback answered) the conversation to the model that served it."""
        if routed.affinity_key is None or routed.router is None:
            return
        pin = Pin(routed.router, routed.task or FALLBACK, model)
        await self.affinity.put(f"{routed.router}:{routed.affinity_key}", pin)
