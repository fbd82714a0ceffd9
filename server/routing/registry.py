"""The live routers: each definition compiled once (task prototypes on the device, model orderings),
swapped in atomically, so requests never see a half-updated router and a rejected update changes
nothing."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from models import ClassifierConfig, TaskVectors, match_probabilities
from models.nomatch import CALIBRATED, Calibration, Fit, criterion_value
from server.errors import AlreadyExists, InvalidInput, NotFound, PersistFailed, StoreUnavailable
from server.routing.persistence import Conflict, RouterStore, SavedRouter, Token
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
    prototypes: TaskVectors  # on the engine's device (models/tasks.py)
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
Routers = dict[str, CompiledRouter]
# A change that keeps losing the compare-and-set to other replicas gives up after this many tries.
_CHANGE_ATTEMPTS = 20


class RouterRegistry:
    """Create/read/update/delete routers. `compile` embeds a definition's tasks (on the engine thread);
    `defaults`, the checkpoint's config, gives the context, criterion and threshold a router omits."""

    def __init__(self, compile: Compile, catalog: Catalog, defaults: ClassifierConfig):
        self._compile = compile
        self._store: RouterStore | None = None
        self._token: Token = None  # the version of the store's set the live set is
        self._failed: str | None = None  # why the last reload failed (logged once per reason)
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

    async def open(self, specs: Sequence[RouterSpec], store: RouterStore | None = None) -> None:
        """Load the live set: `specs` (the router files), or with a store, what it holds, seeded
        with `specs` when it never held anything. From then on every change is saved to the store
        before it becomes visible."""
        async with self._lock:
            if store is None:
                for spec in specs:
                    router = await self._build(spec, version=1, created=None)
                    self._routers = {**self._routers, spec.name: router}
                return
            saved, token = await store.open(specs)
            await self._apply(saved, token)
            self._store = store

    @property
    def store(self) -> RouterStore | None:
        return self._store

    async def follow(self) -> None:
        """Serve what other processes save to the store (the workers of one server, the replicas
        sharing Redis), until cancelled. A set that cannot be read or compiled is logged once and the
        last good set keeps serving."""
        if self._store is None:
            return
        async for _ in self._store.changes():
            async with self._lock:
                try:
                    changed = await self._store.read_if_changed(self._token)
                    if changed is not None:
                        await self._apply(*changed)
                        log.info("routers reloaded from %s (changed by another process)", self._store.where)
                    self._failed = None
                except Exception as exc:
                    if str(exc) != self._failed:
                        where = self._store.where
                        log.error("routers in %s not loaded, serving the last good set: %s", where, exc)
                    self._failed = str(exc)

    async def _apply(self, saved: list[SavedRouter], token: Token) -> None:
        """Make `saved` the live set; routers whose uuid and version are live already stay compiled."""
        live = {r.uuid: r for r in self._routers.values()}
        routers: Routers = {}
        for entry in saved:
            old = live.get(entry.uuid)
            if old is not None and (old.version, old.update_time) == (entry.version, entry.update_time):
                routers[entry.spec.name] = old
            else:
                routers[entry.spec.name] = await self._build(
                    entry.spec, entry.version, entry.create_time, entry.uuid, entry.update_time
                )
        self._routers, self._token = routers, token

    async def _change(self, make: Callable[[], Awaitable[Routers]]) -> None:
        """Apply `make` (the new set, from the live one) in this process and, with a store, saved
        first. The change starts from the set last saved by any process: under the store's lock
        (file), or again from the newer set when the compare-and-set loses (Redis)."""
        async with self._lock:
            store = self._store
            if store is None:
                self._routers = await make()
                return
            for _ in range(_CHANGE_ATTEMPTS):
                async with store.transaction():
                    try:
                        changed = await store.read_if_changed(self._token)
                    except InvalidInput as exc:  # the stored set, not the caller's request, is at fault
                        raise PersistFailed(f"{exc}; nothing was changed") from exc
                    if changed is not None:
                        await self._apply(*changed)
                    routers = await make()  # validates against the latest set: names, versions
                    saved = [
                        SavedRouter(r.spec, r.uuid, r.version, r.create_time, r.update_time)
                        for r in routers.values()
                    ]
                    try:
                        self._token = await store.save(saved, self._token)
                    except Conflict:
                        continue
                    self._routers = routers
                    return
            raise StoreUnavailable(
                f"{store.where} kept changing under this change ({_CHANGE_ATTEMPTS} tries); "
                "nothing was changed"
            )

    async def create(self, spec: RouterSpec) -> CompiledRouter:
        made: list[CompiledRouter] = []

        async def make() -> Routers:
            if spec.name in self._routers:
                raise AlreadyExists(f"router {spec.name!r} already exists; use UpdateRouter to change it")
            made[:] = [await self._build(spec, version=1, created=None)]
            return {**self._routers, spec.name: made[0]}

        await self._change(make)
        log.info("router %r created (uuid %s, %d tasks)", spec.name, made[0].uuid, len(spec.tasks))
        return made[0]

    async def update(self, spec: RouterSpec, current_name: str | None = None) -> CompiledRouter:
        """Replace a definition; `current_name` (the HTTP API's PUT by uuid) allows a rename."""
        made: list[CompiledRouter] = []
        renamed: list[str] = []

        async def make() -> Routers:
            old = self.get(current_name or spec.name)
            if spec.name != old.spec.name and spec.name in self._routers:
                raise AlreadyExists(f"router {spec.name!r} already exists; choose another name")
            made[:] = [await self._build(spec, old.version + 1, old.create_time, old.uuid)]
            renamed[:] = [f", renamed from {old.spec.name!r}" if spec.name != old.spec.name else ""]
            routers = {n: r for n, r in self._routers.items() if n != old.spec.name}
            return {**routers, spec.name: made[0]}

        await self._change(make)
        log.info("router %r updated to version %d%s", spec.name, made[0].version, renamed[0])
        return made[0]

    async def delete(self, name: str) -> None:
        async def make() -> Routers:
            self.get(name)
            return {n: r for n, r in self._routers.items() if n != name}

        await self._change(make)
        log.info("router %r deleted", name)
