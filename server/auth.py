"""Who may call what. Admin calls (router management, over gRPC and HTTP) need the admin token once one
is configured; inference calls need the inference token (or the admin token) once one is configured.
Health and reflection stay open, so orchestrators can probe without secrets.

Tokens come from environment variables named in config (never from config files), are compared in
constant time, and appear in no message or log line.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc

from server.config import AuthSection, env_secret
from server.errors import PermissionDenied, TaskRouterError, Unauthenticated

ADMIN_METHODS = frozenset({"CreateRouter", "UpdateRouter", "GetRouter", "ListRouters", "DeleteRouter"})
GUARDED_SERVICE = "taskrouter.v1.TaskRouter"


def _token(name: str | None, setting: str) -> str | None:
    if not name:
        return None
    value = env_secret(name)
    if not value:  # named but missing: refusing to start beats silently running open
        raise ValueError(f"auth.{setting} names ${name}, which is not set or empty")
    return value


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


class Auth:
    def __init__(self, cfg: AuthSection) -> None:
        self._admin = _token(cfg.admin_token_env, "admin_token_env")
        self._inference = _token(cfg.inference_token_env, "inference_token_env")

    def check(self, admin: bool, authorization: str | None, what: str) -> None:
        """Raise Unauthenticated or PermissionDenied unless `authorization` may make this call."""
        if (self._admin if admin else self._inference) is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(f"{what} needs the header `authorization: Bearer <token>`")
        token = token.strip()
        if _same(token, self._admin):
            return
        if _same(token, self._inference):
            if admin:
                raise PermissionDenied(
                    f"{what} manages routers and needs the admin token; this one may only classify"
                )
            return
        raise Unauthenticated(f"{what}: the bearer token is not valid")


def _deny(handler: grpc.RpcMethodHandler, error: TaskRouterError) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers `error`'s status and nothing else."""

    async def unary(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(error.code, str(error))

    async def stream(request: object, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        await context.abort(error.code, str(error))
        yield  # pragma: no cover  (makes this an async generator, as a streaming handler must be)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


class GrpcAuth(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        _, service, method = details.method.split("/", 2) if details.method.count("/") == 2 else ("", "", "")
        if service != GUARDED_SERVICE or handler is None:
            return handler
        metadata = dict(details.invocation_metadata or ())
        try:
            self.auth.check(method in ADMIN_METHODS, metadata.get("authorization"), method)
        except TaskRouterError as error:
            return _deny(handler, error)
        return handler
