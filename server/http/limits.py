"""What the HTTP server refuses before any route runs: a body that is not JSON, too large, or too slow.

Every POST/PUT here takes a JSON body and nothing else, so:

- `Content-Type` must be `application/json` (or `application/*+json`), else 415. A browser sends a
  cross-site `text/plain` POST without asking first; without this check a web page could create
  routers and trigger paid completions on a server whose auth is off (the default).
- The body is read here, at most `http.max_body_bytes` (413 past it, as soon as the declared length or
  the bytes read so far say so, never after buffering the rest) and within `http.body_timeout_s`
  (408), then handed to the route whole.

Errors come back in the shape of the API the path belongs to (server/errors.http_error).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import TaskRouterError, http_error

_WITH_BODY = ("POST", "PUT", "PATCH")


class _Refused(TaskRouterError):
    def __init__(self, status: int, ident: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.http_id = ident


class _Gone(Exception):
    """The client disconnected mid-body: nothing to answer."""


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class BodyLimits:
    """ASGI middleware enforcing the content type, size and read deadline of request bodies."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float, shape: Callable[[str], str]
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.shape = shape  # path -> "openai" | "v2"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._body(scope, receive)
        except _Refused as exc:
            await self._answer(scope, send, exc)
            return
        except _Gone:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # only http.disconnect is left to come

        await self.app(scope, replay, send)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "")
        if not _is_json(content_type):
            raise _Refused(
                415,
                "unsupported_media_type",
                f"Content-Type is {content_type or 'missing'!r}; send the JSON body as application/json",
            )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large(f"declared {int(declared)} bytes")
        try:
            return await asyncio.wait_for(self._read(receive), self.body_timeout_s)
        except TimeoutError:
            raise _Refused(
                408,
                "request_timeout",
                f"the body did not arrive within http.body_timeout_s={self.body_timeout_s:g} s",
            ) from None

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(f"more than {self.max_body_bytes} bytes sent")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, what: str) -> _Refused:
        return _Refused(
            413,
            "payload_too_large",
            f"the body is too large ({what}); at most {self.max_body_bytes} bytes "
            "(http.max_body_bytes) are accepted",
        )

    async def _answer(self, scope: Scope, send: Send, exc: _Refused) -> None:
        status, payload = http_error(exc, self.shape(scope["path"]))
        data = json.dumps(payload).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        # The rest of an oversized or stalled body is never read: close rather than reuse the connection.
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
