"""Overload against the real server process: a burst far past the admission bound. The surplus gets
RESOURCE_EXHAUSTED at once, every admitted request completes, and an admitted request's wait stays
bounded by the few batches allowed ahead of it (the server's own timings, not a wall-clock assertion
on this noisy machine). The metrics count every refusal."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc
from tests.conftest import Spawned, spawn_server

LIMIT = 8  # requests queued or running
BURST = 96


@pytest.fixture(scope="module")
def server() -> Iterator[Spawned]:
    env = {
        "TASKROUTER_BATCHING__MAX_QUEUED_REQUESTS": str(LIMIT),
        "TASKROUTER_BATCHING__MAX_BATCH_REQUESTS": str(LIMIT // 2),
        "TASKROUTER_BATCHING__MAX_QUEUE_MS": "0",  # the count bound alone: deterministic
        "TASKROUTER_MODEL__SPIN": "false",  # the client shares these 2 cores
    }
    spawned = spawn_server(
        ["--port", "0", "--http-port", "0"], r"listening on [\d.]+:(\d+) \(gRPC\) and [\d.]+:(\d+)", env
    )
    deadline = time.monotonic() + 120
    while not any("SERVING on" in line for line in spawned.log):
        assert spawned.proc.poll() is None and time.monotonic() < deadline, "".join(spawned.log[-20:])
        time.sleep(0.1)
    yield spawned
    spawned.proc.terminate()
    spawned.proc.wait(30)


def test_a_burst_past_the_bound_is_refused_fast_and_admitted_requests_finish(server: Spawned) -> None:
    port, http_port = int(server.ready.group(1)), int(server.ready.group(2))
    prompt = "My card was charged twice for the same order; please refund one of the payments. " * 4
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TaskRouterStub(channel)
        alone = stub.Classify(pb.ClassifyRequest(router="support", prompt=prompt), timeout=30)
        sent = time.perf_counter()
        calls = [
            stub.Classify.future(pb.ClassifyRequest(router="support", prompt=prompt), timeout=60)
            for _ in range(BURST)
        ]
        answered_s: dict[int, float] = {}
        for i, call in enumerate(calls):
            call.add_done_callback(lambda _, i=i: answered_s.__setitem__(i, time.perf_counter() - sent))
        admitted, admitted_s, refused, refused_s = [], [], [], []
        for i, call in enumerate(calls):
            try:
                admitted.append(call.result())
                admitted_s.append(answered_s[i])
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                assert f"limit {LIMIT}" in exc.details() and "retry with backoff" in exc.details()
                refused.append(call)
                refused_s.append(answered_s[i])
        assert len(admitted) + len(refused) == BURST
        assert len(admitted) >= LIMIT and len(refused) >= BURST // 2
        assert alone.matched and all(r.task == alone.task for r in admitted)  # real answers
        # Bounded wait: at most LIMIT requests were ever queued or running, so an admitted request
        # waited for at most the batches holding the others, each no slower than the slowest seen.
        slowest_batch = max(r.timing.inference_ms for r in admitted)
        batches_ahead = LIMIT // (LIMIT // 2)
        queue_ms = np.array([r.timing.queue_ms for r in admitted])
        assert queue_ms.max() <= (batches_ahead + 1) * slowest_batch + 50, (queue_ms.max(), slowest_batch)
        print(
            f"\nburst {BURST}, bound {LIMIT}: {len(admitted)} admitted, {len(refused)} refused; median "
            f"{1e3 * np.median(admitted_s):.0f} ms admitted vs {1e3 * np.median(refused_s):.0f} ms refused; "
            f"max queue {queue_ms.max():.0f} ms, slowest batch {slowest_batch:.0f} ms"
        )
        # Refusals do not wait for the model: they come back before most admitted answers do.
        assert np.median(refused_s) < np.median(admitted_s), (np.median(refused_s), np.median(admitted_s))
        # The server stays healthy: a request after the burst is answered normally.
        after = stub.Classify(pb.ClassifyRequest(router="support", prompt=prompt), timeout=30)
        assert after.task == alone.task
    metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
    counted = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("taskrouter_admission_rejections_total{")
    )
    assert counted == len(refused)
    assert 'taskrouter_requests_total{api="Classify",model="",outcome="RESOURCE_EXHAUSTED"' in metrics
