"""The running service's parts and their lifecycle: load the model, warm it up, compile the routers,
start batching and the model targets, build chat routing, the forwarder and the chat sessions from
them (each part gets the parts it uses, never this object), and only then report SERVING
(server/health.py). The fronts (gRPC servicer, HTTP API, console) reach the parts through the guarded
properties here, which answer UNAVAILABLE while loading; nothing below the fronts sees this object."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from server.chat.affinity import AffinityStore, MemoryAffinity, RedisAffinity
from server.chat.route import ChatRouting
from server.chat.session import ChatSessions
from server.classify.batching import Batcher
from server.classify.engine import BatchItem, CompiledTasks, Engine, TaskText
from server.config import AffinitySection, Config, RoutersSection
from server.errors import NotReady
from server.health import Health
from server.routing.persistence import RouterState, RouterStore
from server.routing.redis_store import RedisRouterStore
from server.routing.registry import RouterRegistry
from server.routing.spec import RouterSpec, load_router_dir
from server.targets import Catalog, Targets, load_catalog
from server.targets.forward import Forwarder
from server.telemetry import Telemetry

log = logging.getLogger(__name__)

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


def make_router_store(
    cfg: RoutersSection, catalog: Catalog, on_up: Callable[[bool], None]
) -> RouterStore | None:
    """The store routers made over the APIs live in, or None (they last as long as the process)."""
    on_up(True)  # only Redis can be unreachable; it reports for itself
    if cfg.store == "redis":
        return RedisRouterStore(cfg.redis_url, catalog, cfg.redis_key, on_up=on_up)
    return RouterState(cfg.state_file, catalog) if cfg.state_file else None


class Runtime:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.telemetry = Telemetry(cfg.telemetry)
        self.health = Health(cfg.telemetry, self.telemetry)
        # The one thread that runs the model: batches and router compilation take turns on it.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._engine: Engine | None = None
        self._registry: RouterRegistry | None = None
        self._following: asyncio.Task[None] | None = None  # reloads what other workers save
        self._batcher: Batcher[BatchItem, np.ndarray] | None = None
        self._targets: Targets | None = None
        self._affinity: AffinityStore | None = None
        self._chat: ChatSessions | None = None

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
    def chat(self) -> ChatSessions:
        """Chat serving (route, forward, pin, attribute, record), built at load from the parts it uses:
        the one path both chat fronts take."""
        return _built(self._chat, _LOADING)

    async def load(self) -> None:
        """Load, warm up and compile everything; health flips to SERVING at the very end."""
        loop = asyncio.get_running_loop()
        catalog = load_catalog(self.cfg.routers.catalog)
        specs = load_router_dir(self.cfg.routers.dir, catalog) if self.cfg.routers.dir else []
        targets = Targets(catalog, self.cfg.targets)
        self._targets = targets
        affinity = self._affinity = make_affinity_store(self.cfg.affinity)
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

        store = make_router_store(self.cfg.routers, catalog, self.health.set_store_up)
        registry = RouterRegistry(compile_router, catalog, engine.config)
        await registry.open(specs, store)  # a store, once written, is what the routers are
        if store is not None:  # other processes change it too: this server's workers, other replicas
            self._following = asyncio.create_task(registry.follow(), name="routers-follow")

        def run_batch(items: list[BatchItem]) -> list[np.ndarray]:
            return engine.score([p for p, _ in items], [proto for _, proto in items])

        batcher: Batcher[BatchItem, np.ndarray] = Batcher(
            run_batch, self.cfg.batching, self.executor, self.telemetry
        )
        batcher.start()
        self.telemetry.metrics.queue_depth.set_function(lambda: batcher.queued)
        self.health.watch(batcher)
        await starting
        self._engine, self._registry, self._batcher = engine, registry, batcher
        routing = ChatRouting(
            registry,
            engine,
            batcher,
            targets,
            affinity,
            self.cfg.limits,
            self.cfg.targets.default_output_tokens,
        )
        self._chat = ChatSessions(routing, Forwarder(targets), affinity)
        names = [r.spec.name for r in registry.list()]
        log.info("ready: %d routers (%s)", len(names), ", ".join(names) or "none")
        await self.health.set_serving(True)

    async def stop(self) -> None:
        await self.health.stop()
        if self._following is not None:
            self._following.cancel()
        if self._registry is not None and self._registry.store is not None:
            await self._registry.store.close()
        if self._batcher is not None:
            await self._batcher.close()
        if self._targets is not None:
            await self._targets.close()
        if self._affinity is not None:
            await self._affinity.close()
        self.executor.shutdown(wait=True)
        self.telemetry.close()
