"""The live routers: each definition compiled once (task prototypes on the device, model orderings),
swapped in atomically, so requests never see a half-updated router and a rejected update changes
nothing."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from models import ClassifierConfig, match_probabilities
from models.nomatch import CALIBRATED, Calibration, Fit, criterion_value
from server.errors import AlreadyExists, InvalidInput, NotFound, PersistFailed
from server.routing.persistence import RouterState, SavedRouter, Stamp
from server.routing.policies import MANUAL
from server.routing.spec import FALLBACK, RouterSpec
from server.targets import Catalog

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the engine builds it; the registry only keeps what it holds
    from server.classify.engine import CompiledTasks


@dataclass(frozen=True)
class TaskResult:
    task: str
    score: float
    similarity: float


@dataclass(frozen=True)
class Decision:
    task: str
    matched: bool
    scores: tuple[TaskResult, ...]  # best first
    fallback_score: float
    threshold: float  # in the criterion's units
    criterion: str
    criterion_value: float  # matched == criterion_value >= threshold


@dataclass(frozen=True)
class NoMatch:
    """A router's compiled no-match decision: how it reads prompts, what it compares, and why."""

    context: str
    criterion: str
    threshold: float
    threshold_source: str  # "router" (explicit), "fitted" (examples / fallback examples), "checkpoint"
    calibration: Calibration
    fit: Fit


@dataclass(frozen=True)
class CompiledRouter:
    spec: RouterSpec
    version: int
    prototypes: torch.Tensor  # [T, D] on the engine's device
    no_match: NoMatch
    temperature: float
    uuid: str  # stable across updates; the HTTP control plane addresses routers by it
    create_time: float
    update_time: float

    @property
    def threshold(self) -> float:
        return self.no_match.threshold

    @property
    def context(self) -> str:
        return self.no_match.context

    @property
    def similarity_cut(self) -> float:
        """The threshold in similarity units: the best similarity below which a prompt falls back
        (the console draws it)."""
        nm = self.no_match
        if nm.criterion == CALIBRATED:
            return nm.calibration.similarity_cut(nm.threshold)
        return nm.threshold

    def decide(self, similarities: np.ndarray) -> Decision:
        """Task or fallback for one prompt's similarities [T]. Runs once per request on the event
        loop, so it stays scalar: a [T] argmax, one criterion value, one softmax row."""
        nm = self.no_match
        sims = np.asarray(similarities, dtype=np.float32)
        best_index = int(sims.argmax())
        value = float(criterion_value(sims[None], np.array([best_index]), nm.criterion, nm.calibration)[0])
        # The threshold in similarity units as the softmax's "no task" candidate: fallback is then
        # the most probable exactly when the prompt falls back.
        probs, fallback = match_probabilities(sims[None], self.similarity_cut, self.temperature)
        order = np.argsort(-sims, kind="stable").tolist()
        names, p, s = self._task_names, probs[0].tolist(), sims.tolist()
        scores = tuple(TaskResult(names[i], p[i], s[i]) for i in order)
        matched = value >= nm.threshold
        return Decision(
            scores[0].task if matched else FALLBACK,
            matched,
            scores,
            float(fallback[0]),
            nm.threshold,
            nm.criterion,
            value,
        )

    @cached_property
    def _task_names(self) -> list[str]:
        return [t.name for t in self.spec.tasks]

    def pool(self, decision: Decision) -> tuple[tuple[str, ...], str]:
        """(the matched task's models in list order, its selection policy), or the fallback models."""
        if not decision.matched:
            return self.spec.fallback_models, FALLBACK
        task = next(t for t in self.spec.tasks if t.name == decision.task)
        return task.models, task.prefer or MANUAL


Compile = Callable[[RouterSpec, str, float], Awaitable["CompiledTasks"]]
# How often a worker looks for a router set another worker saved: within 1 s of any change.
FOLLOW_INTERVAL_S = 0.5


class RouterRegistry:
    """Create/read/update/delete routers. `compile` embeds a definition's tasks (on the engine thread);
    `defaults`, the checkpoint's config, gives the context, criterion and threshold a router omits."""

    def __init__(self, compile: Compile, catalog: Catalog, defaults: ClassifierConfig):
        self._compile = compile
        self._store: RouterState | None = None
        self._stamp: Stamp = None  # the version of the store's file the live set is
        self._failed_stamp: Stamp = None  # a version that could not be loaded (logged once)
        self.catalog = catalog
        self._defaults = defaults
        self._routers: dict[str, CompiledRouter] = {}
        self._lock = asyncio.Lock()  # one mutation at a time; reads never wait

    def get(self, name: str) -> CompiledRouter:
        router = self._routers.get(name)
        if router is None:
            known = ", ".join(sorted(self._routers)) or "none"
            raise NotFound(f"unknown router {name!r}; known: {known}")
        return router

    def list(self) -> list[CompiledRouter]:
        return [self._routers[name] for name in sorted(self._routers)]

    def by_uuid(self, router_uuid: str) -> CompiledRouter:
        for router in self._routers.values():
            if router.uuid == router_uuid:
                return router
        raise NotFound(f"no router with uuid {router_uuid!r}")

    async def _build(
        self,
        spec: RouterSpec,
        version: int,
        created: float | None,
        router_uuid: str | None = None,
        updated: float | None = None,
    ) -> CompiledRouter:
        criterion = spec.resolved_criterion(self._defaults.criterion)
        default = self._defaults.default_threshold(criterion, any(t.examples for t in spec.tasks))
        compiled = await self._compile(spec, criterion, default)
        if spec.threshold is not None:
            threshold, source = spec.threshold, "router"
        elif compiled.fit.examples or compiled.fit.fallback_examples:
            threshold, source = compiled.fit.threshold, "fitted"
        else:
            threshold, source = default, "checkpoint"
        no_match = NoMatch(
            spec.context or self._defaults.context,
            criterion,
            threshold,
            source,
            compiled.calibration,
            compiled.fit,
        )
        now = time.time() if updated is None else updated
        return CompiledRouter(
            spec=spec,
            version=version,
            prototypes=compiled.prototypes,
            no_match=no_match,
            temperature=self._defaults.temperature,
            uuid=router_uuid or str(uuid.uuid4()),
            create_time=now if created is None else created,
            update_time=now,
        )

    async def open(self, specs: Sequence[RouterSpec], store: RouterState | None = None) -> None:
        """Load the live set: `specs` (the router files), or with a store, what it holds, seeded
        with `specs` when it was never written. The store is rewritten at once (which proves it
        writable) and saved before every change becomes visible from then on."""
        if store is None:
            for spec in specs:
                await self.create(spec)
            return
        async with self._lock:
            async with store.locked():  # workers starting together seed the file once
                store.clear_strays()
                saved, _ = await asyncio.to_thread(store.read)
                if saved is None:
                    now = time.time()
                    saved = [SavedRouter(spec, str(uuid.uuid4()), 1, now, now) for spec in specs]
                else:
                    log.info("routers restored from %s", store.path)
                stamp = await asyncio.to_thread(store.save, saved)
            self._store = store
            await self._apply(saved, stamp)

    async def follow(self, interval: float = FOLLOW_INTERVAL_S) -> None:
        """Serve what other processes save to the store (the workers of one server), until cancelled.
        A file that cannot be read or compiled is logged once and the last good set keeps serving."""
        store = self._store
        if store is None:
            return
        while True:
            await asyncio.sleep(interval)
            stamp = store.stamp()
            if stamp is None or stamp in (self._stamp, self._failed_stamp):
                continue  # unchanged, or missing (a deleted file never deletes the live routers)
            async with self._lock:
                try:
                    await self._refresh()
                except Exception as exc:
                    self._failed_stamp = store.stamp()
                    log.error("router state file %s changed but was not loaded: %s", store.path, exc)

    async def _refresh(self) -> None:
        """Load the store's file when it is not the version the live set is."""
        assert self._store is not None
        if self._store.stamp() == self._stamp:
            return
        saved, stamp = await asyncio.to_thread(self._store.read)
        if saved is not None:
            await self._apply(saved, stamp)
            log.info("routers reloaded from %s (changed by another process)", self._store.path)

    async def _apply(self, saved: list[SavedRouter], stamp: Stamp) -> None:
        """Make `saved` the live set; routers whose uuid and version are live already stay compiled."""
        live = {r.uuid: r for r in self._routers.values()}
        routers: dict[str, CompiledRouter] = {}
        for entry in saved:
            old = live.get(entry.uuid)
            if old is not None and (old.version, old.update_time) == (entry.version, entry.update_time):
                routers[entry.spec.name] = old
            else:
                routers[entry.spec.name] = await self._build(
                    entry.spec, entry.version, entry.create_time, entry.uuid, entry.update_time
                )
        self._routers, self._stamp = routers, stamp

    @asynccontextmanager
    async def _changing(self) -> AsyncIterator[None]:
        """One change at a time in this process and, with a store, across the processes sharing it;
        the change starts from the set last saved by any of them."""
        async with self._lock:
            if self._store is None:
                yield
                return
            async with self._store.locked():
                try:
                    await self._refresh()
                except InvalidInput as exc:  # the file, not the caller's request, is at fault
                    raise PersistFailed(f"{exc}; nothing was changed") from exc
                yield

    async def _commit(self, routers: dict[str, CompiledRouter]) -> None:
        if self._store is not None:
            saved = [
                SavedRouter(r.spec, r.uuid, r.version, r.create_time, r.update_time) for r in routers.values()
            ]
            # a write and two fsyncs: off the event loop
            self._stamp = await asyncio.to_thread(self._store.save, saved)
        self._routers = routers

    async def create(self, spec: RouterSpec) -> CompiledRouter:
        async with self._changing():
            if spec.name in self._routers:
                raise AlreadyExists(f"router {spec.name!r} already exists; use UpdateRouter to change it")
            router = await self._build(spec, version=1, created=None)
            await self._commit({**self._routers, spec.name: router})
            log.info("router %r created (uuid %s, %d tasks)", spec.name, router.uuid, len(spec.tasks))
            return router

    async def update(self, spec: RouterSpec, current_name: str | None = None) -> CompiledRouter:
        """Replace a definition; `current_name` (the HTTP API's PUT by uuid) allows a rename."""
        async with self._changing():
            old = self.get(current_name or spec.name)
            if spec.name != old.spec.name and spec.name in self._routers:
                raise AlreadyExists(f"router {spec.name!r} already exists; choose another name")
            router = await self._build(spec, old.version + 1, old.create_time, old.uuid)
            routers = {n: r for n, r in self._routers.items() if n != old.spec.name}
            await self._commit({**routers, spec.name: router})
            renamed = f", renamed from {old.spec.name!r}" if spec.name != old.spec.name else ""
            log.info("router %r updated to version %d%s", spec.name, router.version, renamed)
            return router

    async def delete(self, name: str) -> None:
        async with self._changing():
            self.get(name)
            await self._commit({n: r for n, r in self._routers.items() if n != name})
            log.info("router %r deleted", name)
