"""The running service's parts and their lifecycle: load the model, warm it up, compile the routers,
start batching, and only then report SERVING."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from grpc_health.v1 import health, health_pb2

from models import PromptInput
from server.batching import Batcher
from server.config import Config
from server.engine import Engine, TaskText
from server.errors import NotReady
from server.policies import load_catalog
from server.registry import RouterRegistry
from server.routers import RouterSpec, load_router_dir

log = logging.getLogger(__name__)

SERVICE_NAME = "taskrouter.v1.TaskRouter"

BatchItem = tuple[PromptInput, torch.Tensor]


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.health = health.aio.HealthServicer()
        # The one thread that runs the model: batches and router compilation take turns on it.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._engine: Engine | None = None
        self._registry: RouterRegistry | None = None
        self._batcher: Batcher[BatchItem, np.ndarray] | None = None

    @property
    def ready(self) -> bool:
        return self._batcher is not None

    def _require(self) -> tuple[Engine, RouterRegistry, Batcher[BatchItem, np.ndarray]]:
        if self._engine is None or self._registry is None or self._batcher is None:
            raise NotReady("the classifier is still loading; retry when grpc.health.v1 reports SERVING")
        return self._engine, self._registry, self._batcher

    @property
    def engine(self) -> Engine:
        return self._require()[0]

    @property
    def registry(self) -> RouterRegistry:
        return self._require()[1]

    @property
    def batcher(self) -> Batcher[BatchItem, np.ndarray]:
        return self._require()[2]

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def load(self) -> None:
        """Load, warm up and compile everything; health flips to SERVING at the very end."""
        loop = asyncio.get_running_loop()
        catalog = load_catalog(self.cfg.routers.catalog)
        specs = load_router_dir(self.cfg.routers.dir, catalog) if self.cfg.routers.dir else []
        engine = await loop.run_in_executor(self.executor, Engine.load, self.cfg.model)
        if self.cfg.model.warmup:
            await loop.run_in_executor(self.executor, engine.warmup)

        async def compile_router(spec: RouterSpec) -> torch.Tensor:
            tasks = [TaskText(t.description, t.examples) for t in spec.tasks]
            return await loop.run_in_executor(self.executor, engine.task_prototypes, tasks)

        registry = RouterRegistry(compile_router, catalog, engine.default_threshold, engine.temperature)
        for spec in specs:
            await registry.create(spec)

        def run_batch(items: list[BatchItem]) -> list[np.ndarray]:
            return engine.score([p for p, _ in items], [proto for _, proto in items])

        batcher: Batcher[BatchItem, np.ndarray] = Batcher(run_batch, self.cfg.batching, self.executor)
        batcher.start()
        self._engine, self._registry, self._batcher = engine, registry, batcher
        log.info("ready: %d routers (%s)", len(specs), ", ".join(s.name for s in specs) or "none")
        await self.set_serving(True)

    async def stop(self) -> None:
        await self.set_serving(False)
        if self._batcher is not None:
            await self._batcher.close()
        self.executor.shutdown(wait=True)
