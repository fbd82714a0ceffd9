"""Domain exceptions and their gRPC status codes, mapped in this one place.

Every message says what was wrong and what is allowed. Anything that is not a TaskRouterError is a
bug: it is logged with a reference id and the caller gets INTERNAL with that id, not the internals.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

log = logging.getLogger(__name__)


class TaskRouterError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidInput(TaskRouterError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TaskRouterError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TaskRouterError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Overloaded(TaskRouterError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(TaskRouterError):
    code = grpc.StatusCode.UNAVAILABLE


class InferenceFailed(TaskRouterError):
    """The model failed on a batch; every caller in it gets this, with the cause."""

    code = grpc.StatusCode.INTERNAL


class TargetUnavailable(TaskRouterError):
    code = grpc.StatusCode.UNAVAILABLE


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def grpc_errors(method: Handler) -> Handler:
    """Wrap an async servicer method so domain errors become their status codes."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except TaskRouterError as exc:
            await context.abort(exc.code, str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception("unhandled error in %s (ref %s)", method.__name__, ref)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); see the server log")

    return wrapper  # type: ignore[return-value]
