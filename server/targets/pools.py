"""Pools: the endpoints that serve a set of models, which one takes the next request, and whether
they are up. A `vllm` pool spreads load over its replicas by outstanding requests plus vLLM's own
queue (scraped from /metrics); an `openai` pool is one remote base URL with its API key."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re

import httpx

from server.targets.catalog import OpenAIPoolSpec, VllmPoolSpec
from server.targets.endpoint import CircuitBreaker, Endpoint

log = logging.getLogger(__name__)

# vLLM's gauges of requests it is running and queueing (summed over its model labels).
_QUEUE_METRIC = re.compile(r"^vllm:num_requests_(?:running|waiting)(?:\{[^}]*\})?\s+([0-9.eE+-]+)", re.M)


class Pool:
    kind = "pool"

    def __init__(self, name: str, endpoints: list[Endpoint]) -> None:
        self.name = name
        self.endpoints = endpoints
        self._turn = itertools.count()  # breaks load ties round-robin

    def available(self) -> bool:
        return any(e.available() for e in self.endpoints)

    def pick(self) -> Endpoint | None:
        """The available endpoint with the least load; None when every one is out."""
        candidates = [e for e in self.endpoints if e.available()]
        if not candidates:
            return None
        start = next(self._turn) % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda e: e.load)

    async def check(self, client: httpx.AsyncClient, timeout_s: float) -> None:
        await asyncio.gather(*(self._check_one(client, e, timeout_s) for e in self.endpoints))

    async def _check_one(self, client: httpx.AsyncClient, endpoint: Endpoint, timeout_s: float) -> None:
        try:
            up = await self._probe(client, endpoint, timeout_s)
        except (httpx.HTTPError, OSError):
            up = False
        if up != endpoint.healthy:
            log.warning("pool %s: %s is %s", self.name, endpoint.base_url, "up" if up else "DOWN")
        endpoint.healthy = up

    async def _probe(self, client: httpx.AsyncClient, endpoint: Endpoint, timeout_s: float) -> bool:
        raise NotImplementedError


class VllmPool(Pool):
    kind = "vllm"

    async def _probe(self, client: httpx.AsyncClient, endpoint: Endpoint, timeout_s: float) -> bool:
        health = await client.get(f"{endpoint.root}/health", timeout=timeout_s)
        if health.status_code != 200:
            return False
        try:
            metrics = await client.get(f"{endpoint.root}/metrics", timeout=timeout_s)
            endpoint.queued = sum(float(v) for v in _QUEUE_METRIC.findall(metrics.text))
        except httpx.HTTPError:
            endpoint.queued = 0.0  # metrics are a hint; health decides
        return True


class OpenAIPool(Pool):
    kind = "openai"

    async def _probe(self, client: httpx.AsyncClient, endpoint: Endpoint, timeout_s: float) -> bool:
        # Any answer below 500 means the provider is reachable (some do not implement /models).
        response = await client.get(
            f"{endpoint.base_url}/models", headers=endpoint.headers, timeout=timeout_s
        )
        return response.status_code < 500


def _breaker(failures: int, open_s: float) -> CircuitBreaker:
    return CircuitBreaker(failures=failures, open_s=open_s)


def build_pool(
    name: str,
    spec: VllmPoolSpec | OpenAIPoolSpec,
    api_key: str | None,
    breaker_failures: int,
    breaker_open_s: float,
) -> Pool:
    if isinstance(spec, OpenAIPoolSpec):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        endpoint = Endpoint(spec.base_url.rstrip("/"), _breaker(breaker_failures, breaker_open_s), headers)
        return OpenAIPool(name, [endpoint])
    urls = list(spec.endpoints) + [f"http://127.0.0.1:{r.port}/v1" for r in spec.launch]
    endpoints = [Endpoint(u.rstrip("/"), _breaker(breaker_failures, breaker_open_s)) for u in urls]
    for endpoint, _ in zip(endpoints[len(spec.endpoints) :], spec.launch, strict=True):
        endpoint.healthy = False  # launched replicas join when their health check passes
    return VllmPool(name, endpoints)
