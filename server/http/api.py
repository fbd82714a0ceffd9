"""The FastAPI application: both route groups plus the error mapping (one handler per API shape)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from server.auth import Auth
from server.console import STATIC_DIR, ConsoleApi
from server.errors import InvalidInput, TaskRouterError, http_error
from server.http.control_plane import PREFIX, ControlPlane
from server.http.limits import BodyLimits
from server.http.openai_front import OpenAIFront
from server.runtime import Runtime
from server.telemetry.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)


def _guard(auth: Auth, admin: bool, what: str) -> Any:
    async def check(request: Request) -> None:
        auth.check(admin, request.headers.get("authorization"), what)

    return Depends(check)


def shape_of(path: str) -> str:
    """The error shape of the API a path belongs to (server/errors.http_error)."""
    return "v2" if path.startswith((PREFIX, "/console")) else "openai"


def build_http_app(runtime: Runtime, auth: Auth | None = None) -> FastAPI:
    http = FastAPI(title="taskrouter", docs_url="/docs", redoc_url=None)
    limits = runtime.cfg.http
    http.add_middleware(
        BodyLimits,
        max_body_bytes=limits.max_body_bytes,
        body_timeout_s=limits.body_timeout_s,
        shape=shape_of,
    )
    open_api, admin_api = [], []
    if auth is not None:
        open_api = [_guard(auth, False, "the OpenAI-compatible API")]
        admin_api = [_guard(auth, True, "the router control plane")]
    http.include_router(OpenAIFront(runtime).routes(), dependencies=open_api)
    http.include_router(ControlPlane(runtime).routes(), dependencies=admin_api)
    http.include_router(ConsoleApi(runtime).routes(), dependencies=admin_api)

    # The console page itself holds no data and is open; everything it shows comes from the guarded
    # APIs above, so with auth on it asks for the admin token.
    @http.get("/", include_in_schema=False)
    @http.get("/console", include_in_schema=False)
    async def console_home() -> RedirectResponse:
        return RedirectResponse("/console/")

    http.mount("/console", StaticFiles(directory=STATIC_DIR, html=True), name="console")
    if runtime.cfg.telemetry.metrics:
        # Open like health: scrapers rarely carry tokens, and counts are not secrets.
        @http.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(runtime.telemetry.render_metrics(), media_type=CONTENT_TYPE)

    def shape(request: Request) -> str:
        return shape_of(request.url.path)

    @http.exception_handler(TaskRouterError)
    async def domain_error(request: Request, exc: TaskRouterError) -> JSONResponse:
        status, body = http_error(exc, shape(request))
        return JSONResponse(body, status_code=status)

    @http.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, body = http_error(InvalidInput(str(exc.errors())), shape(request))
        return JSONResponse(body, status_code=status)

    @http.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("unhandled error on %s (ref %s)", request.url.path, ref)
        status, body = http_error(None, shape(request), f"internal error (ref {ref}); see the server log")
        return JSONResponse(body, status_code=status)

    return http
