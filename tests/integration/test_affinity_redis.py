"""Session affinity in a real Redis server (Debian's redis-server, started here on a free port): pins
are shared by every replica of the service and expire after their TTL without use."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import openai
import pytest
import redis

from server.chat.affinity import Pin, RedisAffinity
from tests.conftest import ServerThread, demo_service, free_port
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make test installs it)"
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    process.terminate()
    process.wait(10)


def test_pins_are_shared_between_replicas_and_expire(redis_url: str) -> None:
    async def scenario() -> tuple[Pin | None, Pin | None, Pin | None]:
        replica_a = RedisAffinity(redis_url, ttl_s=0.5)
        replica_b = RedisAffinity(redis_url, ttl_s=0.5)
        await replica_a.put("r:conversation", Pin("r", "math", "cheap"))
        seen_by_b = await replica_b.get("r:conversation")
        await asyncio.sleep(0.3)
        refreshed = await replica_b.get("r:conversation")  # a hit restarts the TTL
        await asyncio.sleep(0.3)
        still = await replica_a.get("r:conversation")
        await asyncio.sleep(0.7)
        expired = await replica_a.get("r:conversation")
        await replica_a.close()
        await replica_b.close()
        return seen_by_b, refreshed and still, expired

    shared, alive, expired = asyncio.run(scenario())
    assert shared == Pin("r", "math", "cheap") and alive == shared and expired is None


@pytest.fixture(scope="module")
def service(
    redis_url: str, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    thread = demo_service(
        fake,
        tmp_path_factory.mktemp("redis"),
        affinity={"store": "redis", "redis_url": redis_url, "ttl_s": 60},
        targets={"health_interval_s": 3600},
    )
    yield thread
    thread.stop()


def test_service_pins_through_redis(service: ServerThread, redis_url: str) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{service.http_port}/v1", api_key="x", max_retries=0)
    key = {"X-Model-Affinity": "redis-conversation"}
    first = client.chat.completions.with_raw_response.create(
        model="router:demo", messages=[{"role": "user", "content": "What is 12 times 12?"}], extra_headers=key
    )
    assert first.headers["x-model-router-pinned"] == "false"
    stored = redis.Redis.from_url(redis_url).get("taskrouter:affinity:demo:redis-conversation")
    assert stored is not None and b'"model": "cheap"' in stored
    second = client.chat.completions.with_raw_response.create(
        model="router:demo",
        messages=[{"role": "user", "content": "Write a haiku about rain."}],
        extra_headers=key,
    )
    assert second.headers["x-model-router-pinned"] == "true" and second.parse().model == "cheap"
    assert second.headers["x-model-affinity"] == "redis-conversation"
