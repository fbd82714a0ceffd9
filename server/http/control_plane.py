"""Router CRUD over HTTP in the shape of hosted inference routers' API, so a script written for it
works against taskrouter by changing the base URL:

    POST   /v2/gen-ai/models/routers          {name, description, policies[], fallback_models}
    GET    /v2/gen-ai/models/routers          {"model_routers": [...], "meta": {"total": n}}
    GET    /v2/gen-ai/models/routers/{uuid}   {"model_router": {...}}
    PUT    /v2/gen-ai/models/routers/{uuid}   the whole definition again
    DELETE /v2/gen-ai/models/routers/{uuid}   204

Errors answer {"id": "invalid_argument", "message": ..., "request_id": ...} like the hosted API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request, Response

from server.http.body import json_body
from server.routing.registry import CompiledRouter
from server.routing.spec import parse_router
from server.runtime import Runtime

PREFIX = "/v2/gen-ai/models/routers"


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


def to_api(router: CompiledRouter) -> dict[str, Any]:
    definition = router.spec.to_dict()
    config = {k: v for k, v in definition.items() if k not in ("name", "description")}
    return {
        "uuid": router.uuid,
        "name": router.spec.name,
        "description": router.spec.description,
        "config": config,
        "no_match": no_match_api(router),
        "version": router.version,
        "created_at": _iso(router.create_time),
        "updated_at": _iso(router.update_time),
    }


def no_match_api(router: CompiledRouter) -> dict[str, Any]:
    """Output only: the compiled no-match decision and where its threshold came from."""
    nm = router.no_match
    return {
        "context": nm.context,
        "criterion": nm.criterion,
        "threshold": nm.threshold,
        "threshold_source": nm.threshold_source,
        "expected_fallback_precision": nm.fit.fallback_precision,
        "expected_fallback_recall": nm.fit.fallback_recall,
        "examples": nm.fit.examples,
        "fallback_examples": nm.fit.fallback_examples,
    }


class ControlPlane:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def routes(self) -> APIRouter:
        api = APIRouter()
        api.add_api_route(PREFIX, self.create, methods=["POST"], status_code=201)
        api.add_api_route(PREFIX, self.list, methods=["GET"])
        api.add_api_route(PREFIX + "/{uuid}", self.get, methods=["GET"])
        api.add_api_route(PREFIX + "/{uuid}", self.update, methods=["PUT"])
        api.add_api_route(PREFIX + "/{uuid}", self.delete, methods=["DELETE"], status_code=204)
        return api

    async def _definition(self, request: Request) -> Any:
        raw = await json_body(request)
        # Accept the hosted API's nesting too ({"config": {"policies", "fallback_models"}}).
        if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
            raw = {**{k: v for k, v in raw.items() if k != "config"}, **raw["config"]}
        return raw

    async def create(self, request: Request) -> dict[str, Any]:
        spec = parse_router(await self._definition(request), self.runtime.registry.catalog)
        return {"model_router": to_api(await self.runtime.registry.create(spec))}

    async def list(self) -> dict[str, Any]:
        routers = [to_api(r) for r in self.runtime.registry.list()]
        return {"model_routers": routers, "links": {}, "meta": {"total": len(routers)}}

    async def get(self, uuid: str) -> dict[str, Any]:
        return {"model_router": to_api(self.runtime.registry.by_uuid(uuid))}

    async def update(self, uuid: str, request: Request) -> dict[str, Any]:
        current = self.runtime.registry.by_uuid(uuid)
        raw = await self._definition(request)
        if isinstance(raw, dict) and "name" not in raw:
            raw = {**raw, "name": current.spec.name}  # PUT may leave the name out
        spec = parse_router(raw, self.runtime.registry.catalog)
        return {"model_router": to_api(await self.runtime.registry.update(spec, current.spec.name))}

    async def delete(self, uuid: str) -> Response:
        await self.runtime.registry.delete(self.runtime.registry.by_uuid(uuid).spec.name)
        return Response(status_code=204)
