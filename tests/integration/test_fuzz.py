"""Random requests at the real service (hypothesis): every answer is a result or a status that names the
caller's mistake (a 4xx over HTTP), never INTERNAL, UNKNOWN or a 5xx, every router created reads back,
and the server keeps answering valid requests. The first part fuzzes Classify, Route and definitions on
the shipped routers; the second the demo service in front of a real upstream on loopback: ClassifyBatch,
Create/UpdateRouter over gRPC and HTTP with numbers (NaN, inf, negative) and examples, Chat, the
OpenAI front, raw bytes at every HTTP API, oversized and non-UTF-8 input, and concurrent updates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc
from tests.conftest import ServerThread, demo_service
from tests.fake_openai import MATH, FakeOpenAI

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


# ---- the demo service in front of a real upstream: batches, definitions, Chat, the HTTP APIs ----

ROUTERS_PATH = "/v2/gen-ai/models/routers"
CALLABLE = ["cheap", "strong", "backup", "spare"]
MODELS = st.sampled_from([*CALLABLE, "routing-only", "nope", ""])
# Numbers a careless client sends: NaN, infinities, negatives, zero, huge, tiny, plain.
NUMBERS = (
    st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -1.0, 1e-12, 0.5])
)
EXAMPLES = st.lists(TEXT, max_size=4)
HUGE = "x" * (1024 * 1024 + 1)  # one byte past limits.max_prompt_bytes
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
HTTP_ALLOWED = range(200, 500)  # a 5xx here would be the server's fault


@pytest.fixture(scope="module")
def demo(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    thread = demo_service(
        fake, tmp_path_factory.mktemp("fuzz"), targets={"health_interval_s": 3600, "breaker_failures": 10_000}
    )
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def http(demo: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{demo.http_port}", timeout=60) as client:
        yield client


def every_router_reads_back(demo: ServerThread, http: httpx.Client) -> list[str]:
    """How the NaN cost cap hid: it was accepted, and only reading the set back failed."""
    names = [r.name for r in demo.stub.ListRouters(pb.ListRoutersRequest(), timeout=30).routers]
    for name in names:
        demo.stub.GetRouter(pb.GetRouterRequest(name=name), timeout=30)
    listed = http.get(ROUTERS_PATH)
    assert listed.status_code == 200, listed.text
    assert sorted(r["name"] for r in listed.json()["model_routers"]) == sorted(names)
    return names


@FUZZ
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["demo", "nope", ""]), TEXT | st.just(HUGE), MESSAGES),
        min_size=0,
        max_size=6,
    )
)
def test_random_classify_batches(demo: ServerThread, rows: list[tuple[str, str, list[pb.Message]]]) -> None:
    batch = pb.ClassifyBatchRequest(
        requests=[pb.ClassifyRequest(router=r, prompt=p, messages=m) for r, p, m in rows]
    )
    assert outcome(demo.stub.ClassifyBatch, batch) in ALLOWED


@st.composite
def definitions(draw: st.DrawFn) -> dict:
    tasks = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["math", "poem", "", "fallback", "x y"]), TEXT, st.lists(MODELS, max_size=4)
            ),
            max_size=3,
        )
    )
    definition: dict = {
        "name": draw(st.sampled_from(["fz-a", "fz-b", "demo", "", "bad name"])),
        "policies": [
            {"custom_task": {"name": n, "description": d, "examples": draw(EXAMPLES)}, "models": m}
            for n, d, m in tasks
        ],
        "fallback_models": draw(st.lists(MODELS, max_size=3)),
    }
    for key in ("threshold", "max_cost_usd"):
        value = draw(NUMBERS)
        if value is not None:
            definition[key] = value
    criterion = draw(st.sampled_from([None, "calibrated", "similarity", "cosine"]))
    if criterion is not None:
        definition["criterion"] = criterion
    if draw(st.booleans()):
        definition["fallback_examples"] = draw(EXAMPLES)
    return definition


def to_proto(definition: dict) -> pb.Router:
    router = pb.Router(
        name=definition["name"],
        policies=[
            pb.Policy(
                custom_task=pb.CustomTask(
                    name=p["custom_task"]["name"],
                    description=p["custom_task"]["description"],
                    examples=p["custom_task"].get("examples", []),
                ),
                models=p["models"],
            )
            for p in definition["policies"]
        ],
        fallback_models=definition["fallback_models"],
        criterion=definition.get("criterion", ""),
        fallback_examples=definition.get("fallback_examples", []),
    )
    for key in ("threshold", "max_cost_usd"):
        if key in definition:
            setattr(router, key, definition[key])
    return router


@FUZZ
@given(
    definition=definitions(),
    via=st.sampled_from(["grpc-create", "grpc-update", "http-create", "http-update"]),
)
def test_random_definitions_over_both_apis_and_every_router_reads_back(
    demo: ServerThread, http: httpx.Client, definition: dict, via: str
) -> None:
    if via.endswith("update") and definition["name"] == "demo":
        definition = {**definition, "name": "fz-a"}  # "demo" stays as it is: the last test uses it
    if via.startswith("grpc"):
        if via == "grpc-create":
            code = outcome(demo.stub.CreateRouter, pb.CreateRouterRequest(router=to_proto(definition)))
        else:
            code = outcome(demo.stub.UpdateRouter, pb.UpdateRouterRequest(router=to_proto(definition)))
        assert code in ALLOWED
    else:
        body = json.dumps(definition)  # allow_nan: NaN and Infinity go out as Python writes them
        headers = {"content-type": "application/json"}
        if via == "http-create":
            answer = http.post(ROUTERS_PATH, content=body, headers=headers)
        else:
            listed = {r["name"]: r["uuid"] for r in http.get(ROUTERS_PATH).json()["model_routers"]}
            target = listed.get(definition["name"], "no-such-uuid")
            answer = http.put(f"{ROUTERS_PATH}/{target}", content=body, headers=headers)
        assert answer.status_code in HTTP_ALLOWED, answer.text
    assert "demo" in every_router_reads_back(demo, http)


@FUZZ
@given(
    model=st.sampled_from(["router:demo", "router:nope", *CALLABLE, "routing-only", ""]),
    prompt=TEXT | st.just(HUGE),
    messages=MESSAGES,
    max_tokens=st.integers(0, 5000),
    temperature=NUMBERS,
    max_cost=NUMBERS,
    key=st.text(max_size=300),
)
def test_random_chat_calls(
    demo: ServerThread,
    model: str,
    prompt: str,
    messages: list[pb.Message],
    max_tokens: int,
    temperature: float | None,
    max_cost: float | None,
    key: str,
) -> None:
    request = pb.ChatRequest(
        model=model, prompt=prompt, messages=messages, max_tokens=max_tokens, affinity_key=key
    )
    if temperature is not None:
        request.temperature = temperature
    if max_cost is not None:
        request.max_cost_usd = max_cost
    try:
        events = list(demo.stub.Chat(request, timeout=60))
        assert events[0].HasField("start") and events[-1].HasField("end")
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {
            "model": st.sampled_from(["router:demo", "cheap", "routing-only", "nope"]) | JSON,
            "messages": st.lists(
                st.fixed_dictionaries({"role": ROLES | JSON, "content": TEXT | JSON}), max_size=3
            )
            | JSON,
        },
        optional={
            "stream": st.booleans() | JSON,
            "stream_options": JSON,
            "max_tokens": JSON,
            "temperature": JSON,
        },
    ),
    cap=st.none() | st.sampled_from(["nan", "inf", "-1", "0", "1e-9", "0.5", "x"]),
    key=st.none() | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300),
)
def test_random_openai_requests(http: httpx.Client, body: dict, cap: str | None, key: str | None) -> None:
    headers = {"content-type": "application/json"}
    if cap is not None:
        headers["x-max-cost-usd"] = cap
    if key is not None:
        headers["x-model-affinity"] = key
    answer = http.post("/v1/chat/completions", content=json.dumps(body), headers=headers)
    assert answer.status_code in HTTP_ALLOWED, answer.text


@FUZZ
@given(
    path=st.sampled_from(
        ["/v1/chat/completions", ROUTERS_PATH, "/console/api/route", "/console/api/evaluate"]
    ),
    raw=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
)
def test_random_bytes_at_every_http_api(http: httpx.Client, path: str, raw: bytes, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answer = http.post(path, content=raw, headers=headers)
    assert answer.status_code in HTTP_ALLOWED, answer.text


@FUZZ
@given(
    method=st.sampled_from(["Classify", "ClassifyBatch", "Route", "Chat", "CreateRouter", "UpdateRouter"]),
    raw=st.binary(max_size=200),
)
def test_random_bytes_at_every_grpc_method(demo: ServerThread, method: str, raw: bytes) -> None:
    """Not even a message: truncated fields, wrong wire types, strings that are not UTF-8."""
    kind = demo.channel.unary_stream if method == "Chat" else demo.channel.unary_unary
    rpc = kind(f"/taskrouter.v1.TaskRouter/{method}", request_serializer=None, response_deserializer=None)
    try:
        answer = rpc(raw, timeout=60)
        if method == "Chat":
            list(answer)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())


def test_concurrent_updates_over_both_apis_end_consistent(demo: ServerThread, http: httpx.Client) -> None:
    base = {
        "name": "fz-concurrent",
        "policies": [{"custom_task": {"name": "math", "description": "Math."}, "models": ["cheap"]}],
        "fallback_models": ["spare"],
    }
    outcome(demo.stub.DeleteRouter, pb.DeleteRouterRequest(name="fz-concurrent"))
    demo.stub.CreateRouter(pb.CreateRouterRequest(router=to_proto(base)))
    router_uuid = demo.stub.GetRouter(pb.GetRouterRequest(name="fz-concurrent")).uuid

    def change(i: int) -> int:
        description = f"Solve math problem number {i}."
        definition = {
            **base,
            "policies": [{"custom_task": {"name": "math", "description": description}, "models": ["cheap"]}],
        }
        if i % 2:
            with httpx.Client(base_url=str(http.base_url), timeout=60) as client:
                return client.put(f"{ROUTERS_PATH}/{router_uuid}", json=definition).status_code
        try:
            demo.stub.UpdateRouter(pb.UpdateRouterRequest(router=to_proto(definition)), timeout=60)
        except grpc.RpcError as exc:
            return {grpc.StatusCode.INVALID_ARGUMENT: 400}.get(exc.code(), 500)
        return 200

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(change, range(20)))
    assert codes == [200] * 20
    final = demo.stub.GetRouter(pb.GetRouterRequest(name="fz-concurrent"))
    assert final.version == 21  # every update applied once, none lost
    assert final.policies[0].custom_task.description.startswith("Solve math problem number")
    every_router_reads_back(demo, http)
    demo.stub.DeleteRouter(pb.DeleteRouterRequest(name="fz-concurrent"))


def test_the_demo_server_still_answers_after_the_fuzzing(demo: ServerThread, http: httpx.Client) -> None:
    answer = demo.stub.Classify(pb.ClassifyRequest(router="demo", prompt=MATH), timeout=30)
    assert answer.task == "math"
    body = {"model": "router:demo", "messages": [{"role": "user", "content": MATH}]}
    assert http.post("/v1/chat/completions", json=body).status_code == 200
