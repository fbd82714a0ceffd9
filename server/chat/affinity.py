"""Session affinity: requests that carry the same key go to the model the first one was routed to,
without classifying again, until the key has been idle for `ttl_s`. Kept in memory by default, or in
Redis so that every replica of the service sees the same pins."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

MAX_KEY_CHARS = 256


@dataclass(frozen=True)
class Pin:
    router: str
    task: str  # the task (or "fallback") the first request matched
    model: str


class AffinityStore(Protocol):
    async def get(self, key: str) -> Pin | None: ...

    async def put(self, key: str, pin: Pin) -> None: ...

    async def close(self) -> None: ...


class MemoryAffinity:
    """A bounded LRU with a sliding TTL: every hit keeps the pin alive for another `ttl_s`."""

    def __init__(self, ttl_s: float, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._clock = clock
        self._pins: OrderedDict[str, tuple[Pin, float]] = OrderedDict()

    async def get(self, key: str) -> Pin | None:
        entry = self._pins.get(key)
        if entry is None:
            return None
        pin, expires = entry
        now = self._clock()
        if now >= expires:
            del self._pins[key]
            return None
        self._pins[key] = (pin, now + self._ttl_s)
        self._pins.move_to_end(key)
        return pin

    async def put(self, key: str, pin: Pin) -> None:
        self._pins[key] = (pin, self._clock() + self._ttl_s)
        self._pins.move_to_end(key)
        while len(self._pins) > self._max_keys:
            self._pins.popitem(last=False)

    async def close(self) -> None:
        self._pins.clear()


class RedisAffinity:
    """Pins as JSON strings under `prefix + key`, with Redis's own expiry (refreshed on every hit)."""

    def __init__(self, url: str, ttl_s: float, prefix: str = "taskrouter:affinity:") -> None:
        import redis.asyncio as redis  # only deployments that use Redis need the package

        self._redis = redis.from_url(url, decode_responses=True)
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = prefix

    async def get(self, key: str) -> Pin | None:
        raw = await self._redis.getex(self._prefix + key, px=self._ttl_ms)
        return Pin(**json.loads(raw)) if raw else None

    async def put(self, key: str, pin: Pin) -> None:
        await self._redis.set(self._prefix + key, json.dumps(asdict(pin)), px=self._ttl_ms)

    async def close(self) -> None:
        await self._redis.aclose()
