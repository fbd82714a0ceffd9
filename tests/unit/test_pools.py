"""A vLLM pool sends each request to the available replica with the least work (its outstanding
requests plus vLLM's own running + waiting counts), rotating among equals."""

from __future__ import annotations

from server.targets import CircuitBreaker, Endpoint
from server.targets.pools import _QUEUE_METRIC, VllmPool


def replica(port: int, outstanding: int = 0, queued: float = 0.0) -> Endpoint:
    return Endpoint(
        f"http://127.0.0.1:{port}/v1", CircuitBreaker(failures=1), outstanding=outstanding, queued=queued
    )


def test_least_loaded_available_replica_wins() -> None:
    busy, queued, idle, down = replica(1, outstanding=3), replica(2, queued=2.0), replica(3, 1), replica(4)
    down.healthy = False
    pool = VllmPool("local", [busy, queued, idle, down])
    assert pool.pick() is idle
    idle.breaker.failure()  # open breaker: out of rotation
    assert pool.pick() is queued
    for endpoint in (busy, queued, idle):
        endpoint.healthy = False
    assert pool.pick() is None and not pool.available()


def test_equal_replicas_take_turns() -> None:
    pool = VllmPool("local", [replica(1), replica(2), replica(3)])
    picks = {pool.pick().base_url for _ in range(6)}
    assert len(picks) == 3


def test_queue_metrics_are_read_from_vllm_text_format() -> None:
    text = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        'vllm:num_requests_running{engine="0",model_name="tiny-llama"} 2.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="tiny-llama"} 1.0\n'
        'vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 1.0\n'
    )
    assert sum(float(v) for v in _QUEUE_METRIC.findall(text)) == 3.0
    assert replica(1).root == "http://127.0.0.1:1"
