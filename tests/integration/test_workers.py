"""Several worker processes on one port (server/workers.py): the real entry point with --workers 2,
one server for the module (two model loads); the last test stops it."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc
from tests.conftest import Spawned, spawn_server
from tests.integration.test_router_crud import DEFINITION, router


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture(scope="module")
def server() -> Iterator[Spawned]:
    spawned = spawn_server(
        ["--workers", "2", "--port", "0", "--http-port", "0"], r"2 workers SERVING on ([\d.]+:\d+)"
    )
    yield spawned
    if spawned.proc.poll() is None:
        spawned.proc.kill()
        spawned.proc.wait()


def worker_pids(server: Spawned) -> list[int]:
    found = [
        int(m.group(1)) for line in server.log if (m := re.search(r"worker \d+ \(pid (\d+)\) starting", line))
    ]
    assert len(found) == 2, "".join(server.log[-20:])
    return found


def http_port(server: Spawned) -> int:
    return next(int(m.group(1)) for line in server.log if (m := re.search(r":(\d+) \(HTTP\)", line)))


def ok_per_worker(server: Spawned, router_name: str | None = None) -> dict[str, float]:
    """Successful requests per worker pid from one /metrics scrape (any worker answers for both)."""
    text = httpx.get(f"http://127.0.0.1:{http_port(server)}/metrics", timeout=10).text
    ok: dict[str, float] = {}  # per worker, summed over its series (tasks differ by prompt)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "taskrouter_requests_total" and sample.labels["outcome"] == "OK":
                if router_name is None or sample.labels["router"] == router_name:
                    worker = sample.labels["worker"]
                    ok[worker] = ok.get(worker, 0.0) + sample.value
    return ok


def channels(server: Spawned, count: int) -> list[grpc.Channel]:
    # A channel of its own per caller: the kernel spreads connections, not requests.
    target = server.ready.group(1)
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.insecure_channel(target, options=options) for _ in range(count)]


def test_two_workers_share_the_port(server: Spawned) -> None:
    workers = worker_pids(server)
    before = {pid: cpu_seconds(pid) for pid in workers}

    def calls(i: int) -> list[str]:
        (channel,) = channels(server, 1)
        with channel:
            stub = pb_grpc.TaskRouterStub(channel)
            return [
                stub.Classify(pb.ClassifyRequest(router="support", prompt=f"refund order {i}-{k}")).task
                for k in range(15)
            ]

    with ThreadPoolExecutor(16) as pool:
        answers = [task for result in pool.map(calls, range(16)) for task in result]
    assert len(answers) == 240 and all(answers)
    spent = {pid: cpu_seconds(pid) - before[pid] for pid in workers}
    assert all(s > 0.1 for s in spent.values()), spent  # both workers classified a share

    # Any worker's /metrics answers for both: each series labelled with its worker's pid, and the
    # labelled counts add up to every request sent (the other worker's file is at most ~1 s old).
    time.sleep(1.5)
    for _ in range(4):  # several connections: whichever worker takes one answers for both
        ok = ok_per_worker(server, "support")
        assert set(ok) == {str(pid) for pid in workers} and sum(ok.values()) == 240, ok

    # The console's Analyze merges the workers too (their recent traffic is at most ~5 s old).
    url = f"http://127.0.0.1:{http_port(server)}/console/api/analyze?window_s=900&router=support"
    deadline = time.monotonic() + 10
    while True:
        summary = httpx.get(url, timeout=10).json()
        if summary["requests"] == 240 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (summary["requests"], summary["workers"]) == (240, 2), summary


def classify_until(stub: pb_grpc.TaskRouterStub, name: str, deadline: float) -> pb.ClassifyResponse:
    """Classify on `name` until the router is there (NOT_FOUND until this worker has loaded it)."""
    while True:
        try:
            return stub.Classify(pb.ClassifyRequest(router=name, prompt="the VPN client says auth failed"))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_a_router_made_through_one_worker_is_served_by_all_within_a_second(server: Spawned) -> None:
    conns = channels(server, 12)
    stubs = [pb_grpc.TaskRouterStub(c) for c in conns]
    name = "shared-helpdesk"
    try:
        stubs[0].CreateRouter(pb.CreateRouterRequest(router=router({**DEFINITION, "name": name})))
        created = time.monotonic()
        answers = [classify_until(stub, name, created + 1.0) for stub in stubs]
        assert time.monotonic() - created < 1.5  # each call itself is milliseconds
        assert {a.task for a in answers} == {"vpn"}
        time.sleep(1.2)  # the other worker's metrics file is at most ~1 s old
        ok = ok_per_worker(server, name)
        # 12 connections on 2 workers: all on one worker would be a 1-in-2048 draw
        assert set(ok) == {str(pid) for pid in worker_pids(server)}, ok

        # 20 updates at once, each on its own connection (both workers), none lost: the versions
        # 2..21 are each handed out once and every connection ends on version 21.
        current = stubs[0].GetRouter(pb.GetRouterRequest(name=name))

        def update(i: int) -> int:
            changed = pb.Router()
            changed.CopyFrom(current)
            changed.description = f"update {i}"
            return stubs[i % len(stubs)].UpdateRouter(pb.UpdateRouterRequest(router=changed)).version

        with ThreadPoolExecutor(20) as pool:
            versions = sorted(pool.map(update, range(20)))
        assert versions == list(range(2, 22))
        deadline = time.monotonic() + 1.0
        while True:
            seen = {(r.version, r.uuid) for r in (s.GetRouter(pb.GetRouterRequest(name=name)) for s in stubs)}
            if len(seen) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert seen == {(21, current.uuid)}

        stubs[-1].DeleteRouter(pb.DeleteRouterRequest(name=name))
        deadline = time.monotonic() + 1.0
        for stub in stubs:
            while True:
                listed = {r.name for r in stub.ListRouters(pb.ListRoutersRequest()).routers}
                if name not in listed or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert name not in listed and "support" in listed
    finally:
        for conn in conns:
            conn.close()


def test_the_workers_stop_together(server: Spawned) -> None:
    proc, lines, workers = server.proc, server.log, worker_pids(server)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, "".join(lines[-20:])
    time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
