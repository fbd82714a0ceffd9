"""The router set in Redis (`routers.store: redis`), shared by every replica behind a Service.

Layout: the whole set as one document (the state file's JSON) under `<key>:doc` and its revision, a
counter, under `<key>:rev`; one document for the same reason as the file (a rename or a delete is one
step). A change is compare-and-set on the revision, in one Lua script: the document is replaced only if
the revision is still the one the change started from, the revision is incremented and published on
`<key>:changed`. A replica that lost the race reloads and retries (server/routing/registry.py), so no
update between replicas is lost. Every replica subscribes to the channel and also compares the revision
every `resync_s` (a message lost while it was disconnected is caught up then).

When Redis cannot be reached, reads keep serving the last good set, `taskrouter_router_store_up` drops
to 0, and a change answers UNAVAILABLE naming Redis. When it is back, empty (a restart without
persistence), the first replica to notice stores its last good set again (the seed script writes only
where no revision exists), so what the replicas served is nowhere lost and all converge on one set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from server.errors import StoreUnavailable
from server.routing.persistence import Conflict, SavedRouter, Token, decode_document, encode_document, seeded
from server.routing.spec import RouterSpec
from server.targets import Catalog

log = logging.getLogger(__name__)

# KEYS: doc, rev. ARGV: a document, the first revision. Stores it only where nothing is stored;
# returns {rev, doc}. The first revision is the time in ms, so a Redis that restarted empty never
# hands out a revision a replica already holds for another set.
_SEED = """
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
end
return {redis.call('GET', KEYS[2]), redis.call('GET', KEYS[1])}
"""
# KEYS: doc, rev, channel. ARGV: expected rev, document. Returns the new rev, or -1 on a conflict.
_SWAP = """
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then
  return -1
end
redis.call('SET', KEYS[1], ARGV[2])
local rev = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], rev)
return rev
"""


class RedisRouterStore:
    def __init__(
        self,
        url: str,
        catalog: Catalog,
        key: str = "taskrouter:routers",
        resync_s: float = 5.0,
        timeout_s: float = 2.0,
        on_up: Callable[[bool], None] | None = None,
    ) -> None:
        import redis.asyncio as redis  # only deployments that use Redis need the package

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._redis = redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.catalog = catalog
        self.where = f"Redis at {url} (key {key})"
        self._doc, self._rev, self._channel = f"{key}:doc", f"{key}:rev", f"{key}:changed"
        self._seed = self._redis.register_script(_SEED)
        self._swap = self._redis.register_script(_SWAP)
        self._resync_s = resync_s
        self._on_up = on_up
        self.up = False
        self._last_good: list[SavedRouter] = []

    def _mark(self, up: bool, exc: BaseException | None = None) -> None:
        if up != self.up:
            if up:
                log.warning("%s reachable again", self.where)
            else:
                log.error("%s unreachable (%s): serving the last good set; changes refused", self.where, exc)
        self.up = up
        if self._on_up is not None:
            self._on_up(up)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        self._mark(False, exc)
        return StoreUnavailable(
            f"{self.where} is unreachable ({exc}); nothing was changed, retry when it is back"
        )

    async def _seed_with(self, routers: Sequence[SavedRouter]) -> tuple[list[SavedRouter], Token]:
        document = encode_document(routers).decode()
        rev, doc = await self._seed(keys=[self._doc, self._rev], args=[document, int(time.time() * 1000)])
        self._mark(True)
        saved = decode_document(doc, self.catalog, self.where)
        self._last_good = saved
        return saved, int(rev)

    async def open(self, seed: Sequence[RouterSpec]) -> tuple[list[SavedRouter], Token]:
        try:
            return await self._seed_with(seeded(seed))
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()  # `save` compares and sets; nothing to hold

    async def read_if_changed(self, token: Token) -> tuple[list[SavedRouter], Token] | None:
        try:
            rev = await self._redis.get(self._rev)
            if rev is not None and int(rev) == token:
                self._mark(True)
                return None
            if rev is not None:
                rev, doc = await self._redis.mget(self._rev, self._doc)  # one atomic read of both
            if rev is None or doc is None:  # Redis came back empty: store the last good set again
                count = len(self._last_good)
                log.warning("%s holds no routers: storing the last good set (%d routers)", self.where, count)
                return await self._seed_with(self._last_good)  # the first replica to get here wins
            self._mark(True)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        saved = decode_document(doc, self.catalog, self.where)
        self._last_good = saved
        return saved, int(rev)

    async def save(self, routers: list[SavedRouter], token: Token) -> Token:
        try:
            keys = [self._doc, self._rev, self._channel]
            rev = int(await self._swap(keys=keys, args=[token, encode_document(routers).decode()]))
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        if rev < 0:
            raise Conflict(f"{self.where} changed since revision {token}")
        self._last_good = list(routers)
        return rev

    async def changes(self) -> AsyncIterator[None]:
        while True:
            pubsub: Any = None
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self._channel)
                yield  # (re)subscribed: catch up with what was missed meanwhile
                while True:
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._resync_s)
                    yield  # a change was published, or resync_s passed: compare the revision
            except self._errors as exc:
                self._mark(False, exc)
                await asyncio.sleep(min(1.0, self._resync_s))
                yield  # read_if_changed probes Redis again
            finally:
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                    except self._errors:
                        pass

    async def close(self) -> None:
        await self._redis.aclose()
