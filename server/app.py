"""The running service's parts and their lifecycle: load the model, warm it up, compile the routers,
start batching and the model targets, build chat routing and the forwarder from them (each part gets
the parts it uses, never this object), and only then report SERVING. The fronts (gRPC servicer, HTTP
API, console) reach the parts through the guarded properties here, which answer UNAVAILABLE while
loading."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from grpc_health.v1 import health, health_pb2

from server.affinity import AffinityStore, MemoryAffinity, RedisAffinity
from server.batching import Batcher
from server.chat import ChatRouter
from server.config import AffinitySection, Config
from server.engine import BatchItem, CompiledTasks, Engine, TaskText
from server.errors import NotReady
from server.forward import Forwarder
from server.persistence import RouterState
from server.registry import RouterRegistry
from server.routers import RouterSpec, load_router_dir
from server.targets import Targets, load_catalog
from server.telemetry import Telemetry

log = logging.getLogger(__name__)

SERVICE_NAME = "taskrouter.v1.TaskRouter"


_LOADING = "the classifier is still loading"
_TARGETS_STARTING = "the model targets are still starting"
Part = TypeVar("Part")


def _built(part: Part | None, what: str) -> Part:
    """A part once load has built it; before that, NotReady (UNAVAILABLE / 503) saying what is pending."""
    if part is None:
        raise NotReady(f"{what}; retry when grpc.health.v1 reports SERVING")
    return part


def make_affinity_store(cfg: AffinitySection) -> AffinityStore:
    if cfg.store == "redis":
        return RedisAffinity(cfg.redis_url, cfg.ttl_s)
    return MemoryAffinity(cfg.ttl_s, cfg.max_keys)


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.health = health.aio.HealthServicer()
        # The one thread that runs the model: batches and router compilation take turns on it.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._engine: Engine | None = None
        self._registry: RouterRegistry | None = None
        self._batcher: Batcher[BatchItem, np.ndarray] | None = None
        self._targets: Targets | None = None
        self._affinity: AffinityStore | None = None
        self._chats: ChatRouter | None = None
        self._forwarder: Forwarder | None = None
        self.telemetry = Telemetry(cfg.telemetry)
        self._serving = False  # what the lifecycle wants; health also needs the classifier not stalled
        self.stalled = False
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._batcher is not None

    @property
    def engine(self) -> Engine:
        return _built(self._engine, _LOADING)

    @property
    def registry(self) -> RouterRegistry:
        return _built(self._registry, _LOADING)

    @property
    def batcher(self) -> Batcher[BatchItem, np.ndarray]:
        return _built(self._batcher, _LOADING)

    @property
    def targets(self) -> Targets:
        return _built(self._targets, _TARGETS_STARTING)

    @property
    def affinity(self) -> AffinityStore:
        return _built(self._affinity, "the service is still starting")

    @property
    def chats(self) -> ChatRouter:
        """Chat routing (router or plain model, affinity pins), built at load from the parts it uses."""
        return _built(self._chats, _LOADING)

    @property
    def forwarder(self) -> Forwarder:
        """The fallback chain to the model targets: the one instance both chat fronts use."""
        return _built(self._forwarder, _TARGETS_STARTING)

    async def set_serving(self, serving: bool) -> None:
        self._serving = serving
        await self._publish_health()

    async def _publish_health(self) -> None:
        up = self._serving and not self.stalled
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _watch(self, batcher: Batcher[BatchItem, np.ndarray]) -> None:
        """Turn a classifier that stopped answering into an alarm: health NOT_SERVING and the stalled
        gauge at 1, until a batch completes again. Without it a hung model thread looks like a quiet
        service, and a broken one like a fast one."""
        cfg = self.cfg.telemetry
        gauge = self.telemetry.metrics.stalled
        shared = self.telemetry.shared
        while True:
            await asyncio.sleep(min(1.0, cfg.stall_after_s / 4))
            if shared is not None:  # the other workers' scrapes read this worker's latest numbers
                shared.publish()
            since = batcher.running_since
            running_s = time.perf_counter() - since if since is not None else 0.0
            failures = batcher.failed_in_a_row
            stalled = running_s > cfg.stall_after_s or failures >= cfg.stall_failed_batches
            if stalled == self.stalled:
                continue
            self.stalled = stalled
            gauge.set(int(stalled))
            if stalled:
                log.error(
                    "classifier stalled (batch running %.1fs, %d failed batches in a row): NOT_SERVING",
                    running_s,
                    failures,
                )
            else:
                log.warning("classifier answering again: SERVING")
            await self._publish_health()

    async def load(self) -> None:
        """Load, warm up and compile everything; health flips to SERVING at the very end."""
        loop = asyncio.get_running_loop()
        catalog = load_catalog(self.cfg.routers.catalog)
        specs = load_router_dir(self.cfg.routers.dir, catalog) if self.cfg.routers.dir else []
        targets = Targets(catalog, self.cfg.targets)
        self._targets = targets
        affinity = self._affinity = make_affinity_store(self.cfg.affinity)
        self._forwarder = Forwarder(targets)
        # Launched vLLM replicas start while the classifier loads; SERVING waits for both.
        starting = asyncio.create_task(targets.start())
        engine = await loop.run_in_executor(
            self.executor, Engine.load, self.cfg.model, self.cfg.batching.max_batch_requests
        )
        if self.cfg.model.warmup:
            await loop.run_in_executor(self.executor, engine.warmup)

        async def compile_router(spec: RouterSpec, criterion: str, default: float) -> CompiledTasks:
            tasks = [TaskText(t.description, t.examples) for t in spec.tasks]
            return await loop.run_in_executor(
                self.executor,
                engine.compile,
                tasks,
                spec.fallback_examples,
                criterion,
                default,
                spec.threshold,
            )

        state = RouterState(self.cfg.routers.state_file, catalog) if self.cfg.routers.state_file else None
        saved = state.load() if state is not None else None
        registry = RouterRegistry(compile_router, catalog, engine.config)
        if saved is not None:  # the state file, once written, is what the routers are
            for router in saved:
                await registry.restore(router)
            specs = [r.spec for r in saved]
            log.info("routers restored from %s", state.path)  # type: ignore[union-attr]
        else:
            for spec in specs:
                await registry.create(spec)
        if state is not None:
            await registry.persist_with(state.save)

        def run_batch(items: list[BatchItem]) -> list[np.ndarray]:
            return engine.score([p for p, _ in items], [proto for _, proto in items])

        batcher: Batcher[BatchItem, np.ndarray] = Batcher(
            run_batch, self.cfg.batching, self.executor, self.telemetry
        )
        batcher.start()
        self.telemetry.metrics.queue_depth.set_function(lambda: batcher.queued)
        self._watchdog = asyncio.create_task(self._watch(batcher), name="watchdog")
        await starting
        self._engine, self._registry, self._batcher = engine, registry, batcher
        self._chats = ChatRouter(
            registry,
            engine,
            batcher,
            targets,
            affinity,
            self.cfg.limits,
            self.cfg.targets.default_output_tokens,
        )
        log.info("ready: %d routers (%s)", len(specs), ", ".join(s.name for s in specs) or "none")
        await self.set_serving(True)

    async def stop(self) -> None:
        await self.set_serving(False)
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._batcher is not None:
            await self._batcher.close()
        if self._targets is not None:
            await self._targets.close()
        if self._affinity is not None:
            await self._affinity.close()
        self.executor.shutdown(wait=True)
        self.telemetry.close()
