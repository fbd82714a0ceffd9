"""Talking the OpenAI chat-completions protocol to one endpoint, with every failure sorted into
"retry elsewhere" (timeout, connection error, 429, 5xx, a stream that dies before its first event)
or "the caller's problem" (other 4xx, passed back unchanged)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from server.targets.endpoint import Endpoint


class UpstreamError(Exception):
    """A failed attempt. `retryable`: another model may succeed; otherwise the answer is final."""

    def __init__(self, reason: str, retryable: bool, status: int | None = None, body: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    first_token_s: float  # until the first streamed event, or the whole non-streamed answer
    read_s: float  # longest gap between two streamed events once the answer has started


def _status_error(status: int, body: bytes) -> UpstreamError:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = body.decode("utf-8", "replace")[:500]
    return UpstreamError(
        f"HTTP {status}", retryable=status == 429 or status >= 500, status=status, body=parsed
    )


def _transport_error(exc: Exception) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError):
        return UpstreamError("timeout", retryable=True)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError("connection error", retryable=True)
    return UpstreamError(f"transport error ({type(exc).__name__})", retryable=True)


async def complete(
    client: httpx.AsyncClient, endpoint: Endpoint, body: dict[str, Any], timeouts: Timeouts
) -> dict[str, Any]:
    """A non-streamed chat completion; raises UpstreamError."""
    timeout = httpx.Timeout(timeouts.first_token_s, connect=timeouts.connect_s)
    try:
        response = await client.post(
            f"{endpoint.base_url}/chat/completions", json=body, headers=endpoint.headers, timeout=timeout
        )
    except (TimeoutError, httpx.HTTPError) as exc:
        raise _transport_error(exc) from exc
    if response.status_code >= 400:
        raise _status_error(response.status_code, response.content)
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamError("invalid JSON in the response", retryable=True) from exc


class Stream:
    """An open SSE stream whose first event has arrived (so the attempt has succeeded so far)."""

    def __init__(self, response: httpx.Response, lines: AsyncIterator[str], first: dict[str, Any]) -> None:
        self._response = response
        self._lines = lines
        self.first = first

    async def rest(self) -> AsyncIterator[dict[str, Any]]:
        """The events after the first, until [DONE]. Raises UpstreamError(retryable=False) when the
        stream breaks: output has been sent by then, so it must not be replayed elsewhere."""
        try:
            while True:
                event = await _next_event(self._lines)
                if event is None:
                    return
                yield event
        except UpstreamError as exc:
            raise UpstreamError(f"stream broke after the first token: {exc.reason}", False) from exc
        except (TimeoutError, httpx.HTTPError) as exc:
            reason = _transport_error(exc).reason
            raise UpstreamError(f"stream broke after the first token: {reason}", False) from exc

    async def close(self) -> None:
        await self._response.aclose()


async def _next_event(lines: AsyncIterator[str]) -> dict[str, Any] | None:
    """The next `data:` event of an SSE stream; None at [DONE]. A stream that ends without [DONE]
    was cut off."""
    async for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments, event names
        data = line[5:].strip()
        if data == "[DONE]":
            return None
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise UpstreamError("invalid JSON in the stream", retryable=True) from exc
        if isinstance(event, dict) and "error" in event:
            raise UpstreamError(f"error event: {json.dumps(event['error'])[:300]}", retryable=True)
        return event
    raise UpstreamError("stream ended without [DONE]", retryable=True)


async def open_stream(
    client: httpx.AsyncClient, endpoint: Endpoint, body: dict[str, Any], timeouts: Timeouts
) -> Stream:
    """Send a streamed request and wait (up to first_token_s) for its first event."""
    timeout = httpx.Timeout(timeouts.read_s, connect=timeouts.connect_s)
    request = client.build_request(
        "POST", f"{endpoint.base_url}/chat/completions", json=body, headers=endpoint.headers, timeout=timeout
    )
    response: httpx.Response | None = None
    try:
        async with asyncio.timeout(timeouts.first_token_s):
            response = await client.send(request, stream=True)
            if response.status_code >= 400:
                raise _status_error(response.status_code, await response.aread())
            lines = response.aiter_lines()
            first = await _next_event(lines)
        if first is None:
            raise UpstreamError("stream ended before its first event", retryable=True)
        return Stream(response, lines, first)
    except UpstreamError:
        if response is not None:
            await response.aclose()
        raise
    except (httpx.HTTPError, TimeoutError) as exc:
        if response is not None:
            await response.aclose()
        raise _transport_error(exc) from exc
