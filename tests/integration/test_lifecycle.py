"""Start-up and overload: health is NOT_SERVING until the model is loaded and warm; reflection lists
the service; past the admission bound callers get RESOURCE_EXHAUSTED and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from taskrouter.v1 import taskrouter_pb2 as pb
from tests.conftest import ServerThread, make_config

SERVICE = "taskrouter.v1.TaskRouter"


@pytest.fixture(scope="module")
def tiny_queue() -> Iterator[ServerThread]:
    """A server (not yet loaded) whose admission bound is 2 requests, one per batch."""
    thread = ServerThread(make_config(batching={"max_batch_requests": 1, "max_queued_requests": 2}))
    yield thread
    thread.stop()


def health(thread: ServerThread, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(thread.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service)).status


def test_health_flips_to_serving_only_after_load_and_warmup(tiny_queue: ServerThread) -> None:
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(tiny_queue, "") == not_serving and health(tiny_queue, SERVICE) == not_serving
    with pytest.raises(grpc.RpcError) as info:
        tiny_queue.stub.Classify(pb.ClassifyRequest(router="support", prompt="hello"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "still loading" in info.value.details()
    tiny_queue.load()
    assert health(tiny_queue, "") == health_pb2.HealthCheckResponse.SERVING
    assert health(tiny_queue, SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(tiny_queue: ServerThread) -> None:
    services = ProtoReflectionDescriptorDatabase(tiny_queue.channel).get_services()
    assert SERVICE in services and "grpc.health.v1.Health" in services


def test_past_the_admission_bound_callers_get_resource_exhausted(tiny_queue: ServerThread) -> None:
    request = pb.ClassifyRequest(router="support", prompt="I was charged twice for my plan " * 20)
    futures = [tiny_queue.stub.Classify.future(request) for _ in range(40)]
    codes = []
    for future in futures:
        try:
            future.result(timeout=120)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert "limit 2" in exc.details() and "retry" in exc.details()
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    assert grpc.StatusCode.OK in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    # Nothing was lost: the server still answers.
    assert tiny_queue.stub.Classify(request).router == "support"
