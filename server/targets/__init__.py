"""Where models are served: the catalogue's pools, their health, measured latencies, and launched
vLLM replicas. `Targets` owns all of it for the lifetime of the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx

from server.config import TargetsSection, env_secret
from server.targets.catalog import Catalog, ModelInfo, OpenAIPoolSpec, VllmPoolSpec, load_catalog
from server.targets.endpoint import CircuitBreaker, Endpoint
from server.targets.pools import Pool, build_pool
from server.targets.stats import LatencyStats
from server.targets.upstream import Timeouts, UpstreamError
from server.targets.vllm import Replica

__all__ = [
    "Catalog",
    "CircuitBreaker",
    "Endpoint",
    "LatencyStats",
    "ModelInfo",
    "Pool",
    "Targets",
    "Timeouts",
    "UpstreamError",
    "load_catalog",
]

log = logging.getLogger(__name__)


class Targets:
    def __init__(self, catalog: Catalog, cfg: TargetsSection) -> None:
        self.catalog = catalog
        self.cfg = cfg
        self.stats = LatencyStats(cfg.latency_alpha)
        self.timeouts = Timeouts(cfg.connect_timeout_s, cfg.first_token_timeout_s, cfg.read_timeout_s)
        self.pools: dict[str, Pool] = {}
        self.replicas: list[Replica] = []
        for name, spec in catalog.pools.items():
            key = env_secret(spec.api_key_env) if isinstance(spec, OpenAIPoolSpec) else None
            if isinstance(spec, OpenAIPoolSpec) and spec.api_key_env and not key:
                log.warning(
                    "pool %s: environment variable %s is not set; calling without a key",
                    name,
                    spec.api_key_env,
                )
            self.pools[name] = build_pool(name, spec, key, cfg.breaker_failures, cfg.breaker_open_s)
            if isinstance(spec, VllmPoolSpec):
                self.replicas += [Replica(name, spec, r) for r in spec.launch]
        self.client: httpx.AsyncClient | None = None
        self._health: asyncio.Task[None] | None = None

    def model(self, name: str) -> ModelInfo:
        return self.catalog.models[name]

    def pool_of(self, model: str) -> Pool | None:
        pool = self.catalog.models[model].pool
        return self.pools[pool] if pool is not None else None

    def healthy(self, model: str) -> bool:
        """A model with no pool is never called here, so only its routing matters: count it as up."""
        pool = self.pool_of(model)
        return pool is None or pool.available()

    async def start(self) -> None:
        """Open the HTTP client, launch replicas, wait for them to answer /health, start probing."""
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=self.cfg.max_connections, max_keepalive_connections=64)
        )
        for replica in self.replicas:
            await replica.start()
        if self.replicas:
            await self._wait_for_replicas()
        await self.check()
        self._health = asyncio.create_task(self._probe_forever())

    async def _wait_for_replicas(self) -> None:
        deadline = time.monotonic() + max(
            self.catalog.pools[r.pool].startup_timeout_s  # type: ignore[union-attr]
            for r in self.replicas
        )
        while time.monotonic() < deadline:
            await self.check()
            if all(p.available() for p in self.pools.values() if p.kind == "vllm"):
                return
            await asyncio.sleep(1.0)
        log.error("launched vLLM replicas not healthy in time; serving without them until they are")

    async def check(self) -> None:
        assert self.client is not None
        timeout = self.cfg.connect_timeout_s
        await asyncio.gather(*(pool.check(self.client, timeout) for pool in self.pools.values()))

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval_s)
            try:
                await self.check()
            except Exception:  # a probe bug must not stop probing; log it and go on
                log.exception("health probe failed")

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        await asyncio.gather(*(r.stop() for r in self.replicas))
        if self.client is not None:
            await self.client.aclose()
