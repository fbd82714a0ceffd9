"""Random requests at the real servicer (hypothesis): every answer is a result or a status that names the
caller's mistake, never an internal error, and the server keeps answering valid requests."""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

# What a caller's mistake may get; INTERNAL or UNKNOWN would be a bug.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
ROUTERS = st.sampled_from(["support", "coding-agent", "", "nope", "support "]) | st.text(max_size=12)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "", "bot"]) | st.text(max_size=8)
TEXT = st.text(max_size=300) | st.sampled_from(["", " ", "\x00", "how do I get a refund?"])
MESSAGES = st.lists(st.builds(pb.Message, role=ROLES, content=TEXT), max_size=5)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def outcome(call: object, request: object) -> grpc.StatusCode:
    try:
        call(request, timeout=30)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@FUZZ
@given(router=ROUTERS, prompt=TEXT, messages=MESSAGES)
def test_random_classify_and_route_requests(
    stub: pb_grpc.TaskRouterStub, router: str, prompt: str, messages: list[pb.Message]
) -> None:
    classify = pb.ClassifyRequest(router=router, prompt=prompt, messages=messages)
    assert outcome(stub.Classify, classify) in ALLOWED
    route = pb.RouteRequest(router=router, prompt=prompt, messages=messages)
    assert outcome(stub.Route, route) in ALLOWED


@FUZZ
@given(
    name=st.text(max_size=20),
    tasks=st.lists(
        st.tuples(
            st.text(max_size=10), TEXT, st.lists(st.sampled_from(["gpt-4o-mini", "nope", ""]), max_size=4)
        ),
        max_size=4,
    ),
    fallback=st.lists(st.sampled_from(["gpt-4o-mini", "llama-3.1-8b-instruct", "", "x"]), max_size=3),
    prefer=st.sampled_from(["", "cheapest", "fastest", "slowest"]),
)
def test_random_router_definitions(
    stub: pb_grpc.TaskRouterStub,
    name: str,
    tasks: list[tuple[str, str, list[str]]],
    fallback: list[str],
    prefer: str,
) -> None:
    definition = pb.Router(
        name=name,
        policies=[
            pb.Policy(
                custom_task=pb.CustomTask(name=task, description=description),
                models=models,
                selection_policy=pb.SelectionPolicy(prefer=prefer),
            )
            for task, description, models in tasks
        ],
        fallback_models=fallback,
    )
    code = outcome(stub.CreateRouter, pb.CreateRouterRequest(router=definition))
    assert code in ALLOWED
    if code == grpc.StatusCode.OK:  # a random definition that happens to be valid: clean it up
        stub.DeleteRouter(pb.DeleteRouterRequest(name=name))


def test_the_server_still_answers_after_the_fuzzing(stub: pb_grpc.TaskRouterStub) -> None:
    answer = stub.Classify(pb.ClassifyRequest(router="support", prompt="How do I reset my password?"))
    assert answer.task == "customer-qa"
