"""One router set across replicas (`routers.store: redis`): a real redis-server on a free port and two
real service processes on loopback, A and B, sharing it. Redis runs without persistence, so stopping
it loses what it held, the worst case for "nowhere lost"."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc
import httpx
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc
from tests.conftest import Spawned, free_port, spawn_server
from tests.integration.test_router_crud import DEFINITION, router

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make test installs it)"
)
T = TypeVar("T")


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        eventually(client.ping, timeout=10)
        client.close()

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


def eventually(check: Callable[[], T], timeout: float, every: float = 0.02) -> T:
    """`check()`'s first result that raises nothing and is truthy, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    result: T | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: last result {result!r}")
        time.sleep(every)


class Replica:
    def __init__(self, spawned: Spawned) -> None:
        self.spawned = spawned
        self.channel = grpc.insecure_channel(spawned.ready.group(1))
        self.stub = pb_grpc.TaskRouterStub(self.channel)
        self.http = next(
            int(m.group(1)) for line in spawned.log if (m := re.search(r":(\d+) \(HTTP\)", line))
        )

    def classify(self, name: str, prompt: str = "the VPN client says authentication failed") -> str:
        return self.stub.Classify(pb.ClassifyRequest(router=name, prompt=prompt)).task

    def names(self) -> set[str]:
        return {r.name for r in self.stub.ListRouters(pb.ListRoutersRequest()).routers}

    def store_up(self) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.http}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "taskrouter_router_store_up":
                    return sample.value
        raise AssertionError("no taskrouter_router_store_up in /metrics")

    def health(self, service: str) -> str:
        answer = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def close(self) -> None:
        self.channel.close()
        self.spawned.proc.terminate()
        self.spawned.proc.wait(60)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def replicas(redis_server: RedisServer) -> Iterator[tuple[Replica, Replica]]:
    env = {"TASKROUTER_ROUTERS__STORE": "redis", "TASKROUTER_ROUTERS__REDIS_URL": redis_server.url}
    args = ["--port", "0", "--http-port", "0"]
    with ThreadPoolExecutor(2) as pool:  # both load their model at once
        started = list(pool.map(lambda _: spawn_server(args, r"SERVING on ([\d.]+:\d+)", env), range(2)))
    a, b = Replica(started[0]), Replica(started[1])
    yield a, b
    a.close()
    b.close()


def test_a_router_created_on_one_replica_is_served_by_the_other_within_a_second(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    assert a.names() == b.names() == {"support", "coding-agent"}  # seeded once from routers.dir
    a.stub.CreateRouter(pb.CreateRouterRequest(router=router({**DEFINITION, "name": "shared"})))
    created = time.monotonic()
    assert eventually(lambda: b.classify("shared"), timeout=1.0) == "vpn"
    assert time.monotonic() - created < 1.5


def test_concurrent_updates_on_both_replicas_lose_nothing(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    current = a.stub.GetRouter(pb.GetRouterRequest(name="shared"))

    def update(i: int) -> int:
        changed = pb.Router()
        changed.CopyFrom(current)
        changed.description = f"update {i}"
        return (a if i % 2 else b).stub.UpdateRouter(pb.UpdateRouterRequest(router=changed)).version

    with ThreadPoolExecutor(20) as pool:
        versions = sorted(pool.map(update, range(20)))
    start = current.version
    assert versions == list(range(start + 1, start + 21))  # every update applied once, in some order

    def same_on_both() -> tuple[int, str] | None:
        seen = {
            (r.version, r.description)
            for r in (x.stub.GetRouter(pb.GetRouterRequest(name="shared")) for x in (a, b))
        }
        return seen.pop() if len(seen) == 1 else None

    version, _description = eventually(same_on_both, timeout=1.0)
    assert version == start + 20


def test_without_redis_both_keep_serving_and_changes_fail_clearly_then_converge(
    redis_server: RedisServer, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    assert a.health("taskrouter.v1.RouterStore") == "SERVING"
    redis_server.stop()  # no persistence: what it held is gone
    assert a.classify("shared") == b.classify("shared") == "vpn"  # the last good set serves
    with pytest.raises(grpc.RpcError) as info:
        a.stub.CreateRouter(pb.CreateRouterRequest(router=router({**DEFINITION, "name": "while-down"})))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Redis at" in info.value.details() and "nothing was changed" in info.value.details()
    assert eventually(lambda: a.store_up() == 0 and b.store_up() == 0, timeout=10)
    # Health says it under the store's own name; the server stays SERVING (it still classifies).
    assert a.health("taskrouter.v1.RouterStore") == b.health("taskrouter.v1.RouterStore") == "NOT_SERVING"
    assert a.health("") == b.health("taskrouter.v1.TaskRouter") == "SERVING"
    assert b.classify("support", "where is my refund") and "while-down" not in a.names() | b.names()

    redis_server.start()  # back, and empty
    assert eventually(lambda: a.store_up() == 1 and b.store_up() == 1, timeout=10)
    assert eventually(lambda: a.health("taskrouter.v1.RouterStore") == "SERVING", timeout=5)
    # The replicas stored their last good set again: both serve it, and Redis holds it.
    assert eventually(lambda: a.names() == b.names() == {"support", "coding-agent", "shared"}, timeout=5)
    stored = redis.Redis(port=redis_server.port).get("taskrouter:routers:doc")
    assert stored is not None and b'"shared"' in stored
    b.stub.CreateRouter(pb.CreateRouterRequest(router=router({**DEFINITION, "name": "after"})))
    assert eventually(lambda: a.classify("after"), timeout=1.0) == "vpn"
