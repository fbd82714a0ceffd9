"""Domain exceptions and their gRPC status codes, mapped in this one place.

Every message says what was wrong and what is allowed. Anything that is not a TaskRouterError is a
bug: it is logged with a reference id and the caller gets INTERNAL with that id, not the internals.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

log = logging.getLogger(__name__)


class TaskRouterError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    # The same error on the HTTP API: status and the error id hosted APIs use ("invalid_argument").
    http_status: int = 500
    http_id: str = "unknown"


class InvalidInput(TaskRouterError):
    http_status = 400
    http_id = "invalid_argument"
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TaskRouterError):
    http_status = 404
    http_id = "not_found"
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TaskRouterError):
    http_status = 409
    http_id = "already_exists"
    code = grpc.StatusCode.ALREADY_EXISTS


class Overloaded(TaskRouterError):
    http_status = 429
    http_id = "resource_exhausted"
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(TaskRouterError):
    http_status = 503
    http_id = "unavailable"
    code = grpc.StatusCode.UNAVAILABLE


class InferenceFailed(TaskRouterError):
    """The model failed on a batch; every caller in it gets this, with the cause."""

    http_id = "internal"
    code = grpc.StatusCode.INTERNAL


class Unauthenticated(TaskRouterError):
    """No token, or one that is not valid."""

    http_status = 401
    http_id = "unauthenticated"
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(TaskRouterError):
    """A valid token that may not make this call (an inference token on an admin call)."""

    http_status = 403
    http_id = "permission_denied"
    code = grpc.StatusCode.PERMISSION_DENIED


class PersistFailed(TaskRouterError):
    """A router change could not be saved to the state file; it was not applied either."""

    http_id = "internal"
    code = grpc.StatusCode.INTERNAL


class StoreUnavailable(TaskRouterError):
    """The shared router store (Redis) cannot be reached: reads keep serving the last good set, a
    change is refused and changes nothing; retry when the store is back."""

    http_status = 503
    http_id = "unavailable"
    code = grpc.StatusCode.UNAVAILABLE


class TargetUnavailable(TaskRouterError):
    """Every candidate model failed or was skipped; `attempts` says what was tried."""

    http_status = 503
    http_id = "unavailable"
    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, attempts: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.attempts = list(attempts)


class OverBudget(TaskRouterError):
    """Every candidate's estimated cost is over the cap: retrying will not help, a bigger cap will."""

    http_status = 400
    http_id = "over_budget"
    code = grpc.StatusCode.FAILED_PRECONDITION


class UpstreamRejected(TaskRouterError):
    """A model answered with a non-retryable error (a 4xx other than 429): the request itself is at
    fault, so no other model is tried and the caller gets the upstream status and body."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    http_id = "upstream_rejected"

    def __init__(self, status: int, body: Any, model: str, hint: str = "") -> None:
        super().__init__(
            f"model {model!r} rejected the request with HTTP {status}: {body}" + (f"; {hint}" if hint else "")
        )
        self.http_status = status
        self.body = body
        self.model = model
        self.hint = hint  # what taskrouter knows of the likely cause (e.g. tool calling not enabled)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


class Undecodable:
    """Stands in for a request message whose bytes did not parse (a string field that is not UTF-8,
    a truncated message): gRPC would answer UNKNOWN naming DecodeError; the handler wrappers below
    answer INVALID_ARGUMENT saying what was wrong instead."""

    def __init__(self, message_type: str, reason: str) -> None:
        self.problem = InvalidInput(
            f"the request is not a valid {message_type} message ({reason}); strings must be UTF-8"
        )


def tolerant(deserializer: Callable[[bytes], Any], message_type: str) -> Callable[[bytes], Any]:
    """A request deserializer that returns Undecodable instead of raising."""

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError, and whatever a C parser raises
            return Undecodable(message_type, str(exc) or type(exc).__name__)

    return parse


def grpc_errors(method: Handler) -> Handler:
    """Wrap an async servicer method so domain errors become their status codes."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if isinstance(request, Undecodable):
                raise request.problem
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method.__name__)

    return wrapper  # type: ignore[return-value]


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, where: str) -> None:
    if isinstance(exc, TaskRouterError):
        await context.abort(exc.code, str(exc))
    ref = uuid.uuid4().hex[:12]
    log.error("unhandled error in %s (ref %s)", where, ref, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); see the server log")


def grpc_stream_errors(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """grpc_errors for server-streaming handlers (async generators): an error before or between
    messages ends the stream with the error's status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            if isinstance(request, Undecodable):
                raise request.problem
            async for message in method(self, request, context):
                yield message
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method.__name__)

    return wrapper


def http_error(exc: TaskRouterError | None, shape: str, message: str | None = None) -> tuple[int, Any]:
    """(status, body) for the HTTP APIs. shape "openai": {"error": {message, type, code}} as OpenAI
    clients expect; shape "v2": {"id", "message", "request_id"} as hosted routers' control plane
    answers. `exc` None is a bug (500, with `message` carrying the log reference)."""
    status = exc.http_status if exc is not None else 500
    ident = exc.http_id if exc is not None else "internal"
    text = message or str(exc)
    if shape == "v2":
        if isinstance(exc, AlreadyExists):
            status, ident = 400, "invalid_argument"  # what the hosted API answers for a taken name
        return status, {"id": ident, "message": text, "request_id": uuid.uuid4().hex}
    if (
        isinstance(exc, UpstreamRejected)
        and isinstance(exc.body, dict)
        and isinstance(exc.body.get("error"), dict)
    ):
        if not exc.hint:
            return status, exc.body  # the model's own error, unchanged
        return status, {**exc.body, "error": {**exc.body["error"], "taskrouter_hint": exc.hint}}
    error: dict[str, Any] = {"message": text, "type": ident, "code": status}
    if isinstance(exc, TargetUnavailable):
        error["attempts"] = exc.attempts
    return status, {"error": error}
