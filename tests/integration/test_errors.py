"""Every kind of bad input gets its status and a message that says what is allowed."""

from __future__ import annotations

import grpc
import pytest

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def expect(call: object, request: object, code: grpc.StatusCode, *phrases: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(request)  # type: ignore[operator]
    assert info.value.code() == code, info.value.details()
    for phrase in phrases:
        assert phrase in info.value.details()


@pytest.mark.parametrize(
    ("request_", "phrases"),
    [
        (pb.ClassifyRequest(router="support"), ["prompt is empty"]),
        (pb.ClassifyRequest(router="support", prompt="   \n "), ["prompt is empty"]),
        (
            pb.ClassifyRequest(router="support", messages=[pb.Message(role="user", content="")]),
            ["prompt is empty"],
        ),
        (
            pb.ClassifyRequest(router="support", messages=[pb.Message(role="bot", content="hi")]),
            ["messages[0].role 'bot' is not allowed", "system, developer, user, assistant, tool"],
        ),
        (
            pb.ClassifyRequest(router="support", prompt="a", messages=[pb.Message(role="user", content="b")]),
            ["either prompt or messages"],
        ),
        (pb.ClassifyRequest(prompt="hello"), ["router is required; known: coding-agent, support"]),
    ],
)
def test_bad_classify_input_is_invalid_argument(
    stub: pb_grpc.TaskRouterStub, request_: pb.ClassifyRequest, phrases: list[str]
) -> None:
    expect(stub.Classify, request_, INVALID, *phrases)


def test_ten_megabyte_prompt_is_refused_with_the_limit(stub: pb_grpc.TaskRouterStub) -> None:
    prompt = "x" * (10 * 1024 * 1024)
    expect(
        stub.Classify,
        pb.ClassifyRequest(router="support", prompt=prompt),
        INVALID,
        "prompt is 10485760 bytes; at most 1048576 bytes are accepted",
    )


def test_unknown_router_is_not_found_and_lists_the_known_ones(stub: pb_grpc.TaskRouterStub) -> None:
    expect(
        stub.Classify,
        pb.ClassifyRequest(router="nope", prompt="hi"),
        grpc.StatusCode.NOT_FOUND,
        "unknown router 'nope'; known: coding-agent, support",
    )
    expect(
        stub.Route, pb.RouteRequest(router="nope", prompt="hi"), grpc.StatusCode.NOT_FOUND, "unknown router"
    )
    expect(stub.GetRouter, pb.GetRouterRequest(name="nope"), grpc.StatusCode.NOT_FOUND, "unknown router")


def test_classify_batch_names_the_bad_entry(stub: pb_grpc.TaskRouterStub) -> None:
    good = pb.ClassifyRequest(router="support", prompt="refund please")
    bad = pb.ClassifyRequest(router="support", prompt="")
    expect(
        stub.ClassifyBatch,
        pb.ClassifyBatchRequest(requests=[good, good, bad]),
        INVALID,
        "requests[2]: prompt is empty",
    )
    expect(stub.ClassifyBatch, pb.ClassifyBatchRequest(), INVALID, "requests is empty")
    expect(
        stub.ClassifyBatch,
        pb.ClassifyBatchRequest(requests=[good] * 513),
        INVALID,
        "at most 512 per ClassifyBatch",
    )


def test_the_server_answers_normally_after_all_of_that(stub: pb_grpc.TaskRouterStub) -> None:
    response = stub.Classify(pb.ClassifyRequest(router="support", prompt="How do I cancel my subscription?"))
    assert response.task == "customer-qa"
