"""Every check on what a caller sends before any work is done, in one place: the conversation (its
roles, size, and that there is something to classify), the router it names, and the numeric knobs
(cost caps, temperature, affinity keys, batch sizes). Each check raises InvalidInput (or NotFound)
with a message that says what is allowed; `where` prefixes it with the row or field it is about."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from models import ALLOWED_ROLES, ChatMessage
from server.chat.affinity import MAX_KEY_CHARS
from server.config import LimitsSection
from server.errors import InvalidInput, NotFound
from server.routing.registry import CompiledRouter, RouterRegistry


def conversation(prompt: str, messages: Sequence[ChatMessage], where: str = "") -> list[ChatMessage]:
    """The conversation of a request that carries either a bare prompt or messages (gRPC's shape)."""
    if prompt and messages:
        raise InvalidInput(f"{where}set either prompt or messages, not both")
    if prompt:
        return [ChatMessage("user", prompt)]
    return list(messages)


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


_TOOL_CHOICES = ("none", "auto", "required")


def check_tool_fields(body: dict[str, Any]) -> None:
    """`tools`, `tool_choice` and `parallel_tool_calls` as OpenAI defines them; they are passed to the
    model unchanged (routing reads the conversation, not the tool list: like a system prompt, the tool
    list is the same on every request of an agent and says nothing about this one)."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidInput("tools must be a list of {type: function, function: {name, ...}}")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if (
                not isinstance(function, dict)
                or tool.get("type") != "function"
                or not isinstance(function.get("name"), str)
            ):
                raise InvalidInput(
                    f"tools[{i}] must be {{type: function, function: {{name, description, parameters}}}}"
                )
    choice = body.get("tool_choice")
    if choice is not None:
        named = isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str)
        if choice not in _TOOL_CHOICES and not named:
            raise InvalidInput(
                f"tool_choice must be one of {', '.join(_TOOL_CHOICES)} "
                "or {type: function, function: {name}}"
            )
        if choice != "none" and not tools:
            raise InvalidInput("tool_choice needs tools")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidInput("parallel_tool_calls must be true or false")


def json_messages(body: dict[str, Any]) -> list[ChatMessage]:
    """The `messages` of a JSON body (OpenAI's shape: content as a string or a list of parts)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a non-empty list of {role, content}")
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidInput(f"messages[{i}] must be an object with a string role")
        parsed.append(ChatMessage(message["role"], _text(message.get("content"), f"messages[{i}]")))
    return parsed


def validate_messages(messages: Sequence[ChatMessage], limits: LimitsSection, where: str = "") -> None:
    """Raise InvalidInput naming the first problem: too many messages, a bad role, too many bytes,
    nothing to classify."""
    if len(messages) > limits.max_messages:
        raise InvalidInput(f"{where}{len(messages)} messages; at most {limits.max_messages} allowed")
    size = 0
    for i, message in enumerate(messages):
        if message.role not in ALLOWED_ROLES:
            raise InvalidInput(
                f"{where}messages[{i}].role {message.role!r} is not allowed; use one of: "
                + ", ".join(ALLOWED_ROLES)
            )
        size += len(message.content.encode("utf-8"))
    if size > limits.max_prompt_bytes:
        raise InvalidInput(
            f"{where}prompt is {size} bytes; at most {limits.max_prompt_bytes} bytes are accepted "
            f"(the classifier reads only its first tokens)"
        )
    if not any(m.content.strip() for m in messages):
        raise InvalidInput(f"{where}prompt is empty: set prompt, or messages with non-empty content")


def lookup_router(registry: RouterRegistry, name: str, where: str = "") -> CompiledRouter:
    if not name:
        known = ", ".join(r.spec.name for r in registry.list()) or "none"
        raise InvalidInput(f"{where}router is required; known: {known}")
    try:
        return registry.get(name)
    except NotFound as exc:
        if not where:
            raise
        raise NotFound(f"{where}{exc}") from None


def check_batch(count: int, limit: int) -> None:
    if count == 0:
        raise InvalidInput(f"requests is empty; send 1 to {limit} requests")
    if count > limit:
        raise InvalidInput(f"{count} requests; at most {limit} per ClassifyBatch call")


def check_max_cost(value: float | None, name: str = "max_cost_usd") -> float | None:
    """A cost cap in USD: positive and finite (NaN or inf would switch the cap off), or unset."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InvalidInput(f"{name} is {value!r}; use a positive, finite number of USD or leave it unset")
    return value


def check_temperature(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise InvalidInput(f"temperature is {value!r}; use a finite number >= 0")
    return value


def check_affinity_key(key: str | None) -> str | None:
    """The key that pins a conversation to a model; empty means none."""
    if key is None or key == "":
        return None
    if len(key) > MAX_KEY_CHARS:
        raise InvalidInput(f"affinity key is {len(key)} characters; at most {MAX_KEY_CHARS} allowed")
    return key


def header_max_cost(raw: str | None) -> float | None:
    """The `X-Max-Cost-USD` header: a positive, finite number of USD."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:  # float() reads "nan" and "inf": a cap they would switch off
        raise InvalidInput(f"X-Max-Cost-USD is {raw!r}; use a positive, finite number of USD")
    return value


def json_max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"max_tokens is {value!r}; use a positive integer")
    return value


def check_stream_fields(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidInput(f"stream is {stream!r}; use true or false")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidInput(f'stream_options is {options!r}; use an object such as {{"include_usage": true}}')
