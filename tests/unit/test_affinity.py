"""The in-memory affinity store: a sliding TTL and a bound on the number of pins."""

from __future__ import annotations

import asyncio

from server.chat.affinity import MemoryAffinity, Pin
from tests.conftest import FakeClock

PIN = Pin("r", "task", "model-a")


def test_pin_expires_after_ttl_without_use_and_hits_extend_it() -> None:
    clock = FakeClock()
    store = MemoryAffinity(ttl_s=10, max_keys=10, clock=clock)

    async def scenario() -> list[Pin | None]:
        await store.put("k", PIN)
        clock.now = 9
        hit = await store.get("k")  # keeps it alive until 19
        clock.now = 18
        still = await store.get("k")
        clock.now = 28.5
        gone = await store.get("k")
        return [hit, still, gone]

    assert asyncio.run(scenario()) == [PIN, PIN, None]


def test_least_recent_pins_go_first_past_the_bound() -> None:
    store = MemoryAffinity(ttl_s=100, max_keys=2)

    async def scenario() -> list[Pin | None]:
        await store.put("a", PIN)
        await store.put("b", PIN)
        await store.get("a")  # b is now the least recent
        await store.put("c", PIN)
        return [await store.get(k) for k in ("a", "b", "c")]

    assert asyncio.run(scenario()) == [PIN, None, PIN]
