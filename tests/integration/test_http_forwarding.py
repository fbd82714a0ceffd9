"""The OpenAI-compatible front end to end: the real service (gRPC + HTTP on loopback) forwards to a
real OpenAI-protocol server on loopback that fails on command, through the `openai` client and a
plain HTTP client that reads the SSE stream line by line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest

from taskrouter.v1 import taskrouter_pb2 as pb
from tests.conftest import ServerThread, demo_service
from tests.fake_openai import MATH, OFF_TOPIC, POEM, FakeOpenAI


@pytest.fixture(scope="module")
def service(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    thread = demo_service(
        fake,
        tmp_path_factory.mktemp("targets"),
        # Long health interval: these tests steer health themselves; a huge breaker threshold keeps
        # one test's failures from taking endpoints out for the next (the breaker has unit tests).
        targets={"first_token_timeout_s": 1.0, "health_interval_s": 3600, "breaker_failures": 1000},
    )
    yield thread
    thread.stop()


@pytest.fixture
def reset(fake: FakeOpenAI) -> FakeOpenAI:
    fake.reset()
    return fake


def died_since_last_probe(service: ServerThread) -> None:
    """The start-up probe found the `gone` pool down; pretend it went down after the probe, so the
    request itself meets the refused connection."""
    service.runtime.targets.pools["gone"].endpoints[0].healthy = True


@pytest.fixture(scope="module")
def client(service: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{service.http_port}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(service: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{service.http_port}", timeout=30) as c:
        yield c


def test_models_lists_routers_next_to_callable_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "router:demo" in ids and {"cheap", "strong", "backup", "spare"} <= set(ids)
    assert "routing-only" not in ids  # no pool: it can be routed to, not called


def test_routed_completion_names_task_model_and_cost(client: openai.OpenAI, reset: FakeOpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="router:demo", messages=[{"role": "user", "content": MATH}]
    )
    answer = raw.parse()
    assert raw.headers["x-model-router-selected-route"] == "math"
    assert answer.model == "cheap"  # prefer: cheapest, and the catalogue name, not the upstream one
    assert answer.choices[0].message.content == "Hello from the fake model."
    assert reset.calls == {"vendor/cheap-7b": 1}
    assert reset.auth == ["Bearer sk-test-123"]  # the key from the environment variable
    served = answer.model_extra["taskrouter"]
    assert served["task"] == "math" and served["model"] == "cheap"
    assert served["completion_tokens"] == 6 and served["cost_usd"] > 0
    assert float(raw.headers["x-model-router-cost-usd"]) == pytest.approx(served["cost_usd"])


def test_streamed_completion_with_usage(client: openai.OpenAI, reset: FakeOpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="router:demo",
            messages=[{"role": "user", "content": MATH}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake model."
    assert {c.model for c in chunks} == {"cheap"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].model_extra["taskrouter"]["task"] == "math"
    assert reset.bodies[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("mode", ["http500", "http429", "slow"])
def test_failure_before_the_first_token_moves_to_the_next_model(
    client: openai.OpenAI, reset: FakeOpenAI, mode: str
) -> None:
    reset.modes["vendor/cheap-7b"] = mode
    answer = client.chat.completions.create(model="router:demo", messages=[{"role": "user", "content": MATH}])
    assert answer.model == "strong"
    assert reset.calls == {"vendor/cheap-7b": 1, "strong": 1}  # each tried once: nothing lost or doubled
    attempts = answer.model_extra["taskrouter"]["attempts"]
    assert [a["model"] for a in attempts] == ["cheap", "strong"]
    assert attempts[0]["outcome"] == {"http500": "HTTP 500", "http429": "HTTP 429", "slow": "timeout"}[mode]


def test_refused_connection_and_broken_stream_fall_through(
    client: openai.OpenAI, reset: FakeOpenAI, service: ServerThread
) -> None:
    died_since_last_probe(service)
    reset.modes["backup"] = "garbage"  # its stream ends before any event
    chunks = list(
        client.chat.completions.create(
            model="router:demo", messages=[{"role": "user", "content": POEM}], stream=True
        )
    )
    assert {c.model for c in chunks} == {"strong"}
    assert reset.calls == {"backup": 1, "strong": 1}


def test_matched_pool_then_fallback_models(
    client: openai.OpenAI, reset: FakeOpenAI, service: ServerThread
) -> None:
    died_since_last_probe(service)
    reset.modes.update({"backup": "http500", "strong": "http500"})
    answer = client.chat.completions.create(model="router:demo", messages=[{"role": "user", "content": POEM}])
    assert answer.model == "spare"
    outcomes = [(a["model"], a["outcome"]) for a in answer.model_extra["taskrouter"]["attempts"]]
    assert outcomes == [
        ("refused", "connection error"),
        ("backup", "HTTP 500"),
        ("strong", "HTTP 500"),
        ("spare", "ok"),
    ]


def test_every_candidate_failing_is_503_naming_them(client: openai.OpenAI, reset: FakeOpenAI) -> None:
    reset.modes.update({"vendor/cheap-7b": "http500", "strong": "http429", "spare": "http500"})
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="router:demo", messages=[{"role": "user", "content": MATH}])
    assert caught.value.status_code == 503
    message = caught.value.body["message"]
    assert "cheap (HTTP 500)" in message and "strong (HTTP 429)" in message and "spare (HTTP 500)" in message


def test_client_error_is_passed_back_without_trying_others(client: openai.OpenAI, reset: FakeOpenAI) -> None:
    reset.modes["vendor/cheap-7b"] = "http400"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="router:demo", messages=[{"role": "user", "content": MATH}])
    assert reset.calls == {"vendor/cheap-7b": 1}


def test_stream_broken_after_first_token_is_never_replayed(http: httpx.Client, reset: FakeOpenAI) -> None:
    reset.modes["vendor/cheap-7b"] = "drop"
    body = {"model": "router:demo", "messages": [{"role": "user", "content": MATH}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    assert events[0]["choices"][0]["delta"]["content"] == "Hello"
    # The same words as the gRPC Chat's UNAVAILABLE (one session serves both fronts).
    assert "stream broke after the first token" in events[-1]["error"]["message"]
    assert "not replayed elsewhere" in events[-1]["error"]["message"]
    assert events[-1]["error"]["type"] == "upstream_error"
    assert reset.calls == {"vendor/cheap-7b": 1}  # not retried elsewhere: no duplicated output


def test_plain_sse_client_reads_route_header_and_attribution(http: httpx.Client, reset: FakeOpenAI) -> None:
    body = {"model": "router:demo", "messages": [{"role": "user", "content": OFF_TOPIC}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = list(response.iter_lines())
        headers = response.headers
    assert headers["x-model-router-selected-route"] == "fallback"
    assert headers["x-model-router-model"] == "spare"
    assert lines[-2] == "data: [DONE]" or lines[-1] == "data: [DONE]"
    comment = next(line for line in lines if line.startswith(": taskrouter "))
    served = json.loads(comment[len(": taskrouter ") :])
    assert served["task"] == "fallback" and served["model"] == "spare"
    chunks = [json.loads(line[5:]) for line in lines if line.startswith("data: {")]
    assert all(c["choices"] for c in chunks)  # no usage chunk: this caller did not ask for one


def test_plain_model_name_passes_straight_through(client: openai.OpenAI, reset: FakeOpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="backup", messages=[{"role": "user", "content": MATH}]
    )
    assert raw.parse().model == "backup" and "x-model-router-selected-route" not in raw.headers
    assert reset.calls == {"backup": 1}


def test_cost_cap_skips_expensive_models(http: httpx.Client, reset: FakeOpenAI) -> None:
    body = {"model": "router:demo", "messages": [{"role": "user", "content": POEM}], "max_tokens": 1000}
    # strong costs ~ $0.015 for 1000 output tokens; backup ~ $0.001. Refused is down anyway.
    response = http.post("/v1/chat/completions", json=body, headers={"X-Max-Cost-USD": "0.005"})
    assert response.status_code == 200
    attempts = response.json()["taskrouter"]["attempts"]
    assert any(a["model"] == "strong" and "exceeds the cap" in a["outcome"] for a in attempts)
    too_tight = http.post("/v1/chat/completions", json=body, headers={"X-Max-Cost-USD": "0.0000001"})
    assert too_tight.status_code == 400 and too_tight.json()["error"]["type"] == "over_budget"
    assert "no candidate model fits the cost cap" in too_tight.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": "router:demo", "messages": []}, "messages must be a non-empty list"),
        ({"model": "router:nope", "messages": [{"role": "user", "content": "hi"}]}, "unknown router 'nope'"),
        ({"model": "who", "messages": [{"role": "user", "content": "hi"}]}, "unknown model 'who'"),
        ({"model": "router:demo", "messages": [{"role": "robot", "content": "hi"}]}, "role 'robot'"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model is required"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(http: httpx.Client, body: dict, problem: str) -> None:
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code in (400, 404)
    assert problem in response.json()["error"]["message"]


def test_affinity_pins_a_conversation_to_its_first_model(client: openai.OpenAI, reset: FakeOpenAI) -> None:
    key = {"X-Model-Affinity": "conversation-1"}
    first = client.chat.completions.with_raw_response.create(
        model="router:demo", messages=[{"role": "user", "content": MATH}], extra_headers=key
    )
    assert first.headers["x-model-affinity"] == "conversation-1"
    assert first.headers["x-model-router-pinned"] == "false" and first.parse().model == "cheap"
    # A poem would go to the poem pool; the pin keeps the conversation on its model, unclassified.
    second = client.chat.completions.with_raw_response.create(
        model="router:demo", messages=[{"role": "user", "content": POEM}], extra_headers=key
    )
    assert second.headers["x-model-router-pinned"] == "true" and second.parse().model == "cheap"
    assert second.headers["x-model-router-selected-route"] == "math"
    assert second.parse().model_extra["taskrouter"]["pinned"] is True
    # Without the key the same prompt is classified as usual.
    assert client.chat.completions.create(
        model="router:demo", messages=[{"role": "user", "content": POEM}]
    ).model in ("backup", "strong")


def test_pinned_model_failing_falls_back_and_repins(client: openai.OpenAI, reset: FakeOpenAI) -> None:
    key = {"X-Model-Affinity": "conversation-2"}
    messages = [{"role": "user", "content": MATH}]
    assert (
        client.chat.completions.create(model="router:demo", messages=messages, extra_headers=key).model
        == "cheap"
    )
    reset.modes["vendor/cheap-7b"] = "http500"
    moved = client.chat.completions.create(model="router:demo", messages=messages, extra_headers=key)
    assert moved.model == "spare"  # pinned model first, then the router's fallback models
    reset.modes.clear()
    again = client.chat.completions.with_raw_response.create(
        model="router:demo", messages=messages, extra_headers=key
    )
    assert again.parse().model == "spare" and again.headers["x-model-router-pinned"] == "true"


def chat_events(service: ServerThread, **fields: object) -> list[pb.ChatEvent]:
    return list(service.stub.Chat(pb.ChatRequest(**fields), timeout=30))


def test_grpc_chat_streams_start_deltas_end(service: ServerThread, reset: FakeOpenAI) -> None:
    events = chat_events(service, model="router:demo", prompt=MATH, max_tokens=20, affinity_key="grpc-1")
    start, *deltas, end = events
    assert (start.start.task, start.start.model, start.start.selection_policy) == (
        "math",
        "cheap",
        "cheapest",
    )
    assert not start.start.pinned and start.start.affinity_key == "grpc-1"
    assert "".join(d.delta for d in deltas) == "Hello from the fake model."
    assert end.end.finish_reason == "stop" and end.end.completion_tokens == 6 and end.end.cost_usd > 0
    assert [a.outcome for a in end.end.attempts] == ["ok"]
    assert reset.bodies[0]["max_tokens"] == 20
    again = chat_events(service, model="router:demo", prompt=POEM, affinity_key="grpc-1")
    assert again[0].start.pinned and again[0].start.model == "cheap"


def test_grpc_chat_failures_are_statuses(service: ServerThread, reset: FakeOpenAI) -> None:
    reset.modes["vendor/cheap-7b"] = "drop"
    stream = service.stub.Chat(pb.ChatRequest(model="router:demo", prompt=MATH), timeout=30)
    received = []
    with pytest.raises(grpc.RpcError) as broken:
        for event in stream:
            received.append(event)
    assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not replayed elsewhere" in broken.value.details()
    assert "stream broke after the first token" in broken.value.details()
    assert received[0].start.model == "cheap" and received[1].delta == "Hello"
    assert reset.calls == {"vendor/cheap-7b": 1}

    reset.modes.update({"vendor/cheap-7b": "http500", "strong": "http500", "spare": "http500"})
    with pytest.raises(grpc.RpcError) as failed:
        chat_events(service, model="router:demo", prompt=MATH)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cheap (HTTP 500)" in failed.value.details() and "spare (HTTP 500)" in failed.value.details()

    with pytest.raises(grpc.RpcError) as invalid:
        chat_events(service, model="router:demo", prompt="")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_route_skips_models_of_an_unhealthy_pool(service: ServerThread, reset: FakeOpenAI) -> None:
    reset.healthy = False
    service.call(service.runtime.targets.check())  # the next health probe, now
    try:
        answer = service.stub.Route(pb.RouteRequest(router="demo", prompt=MATH))
        assert list(answer.models) == [] and answer.selection_policy == "cheapest"
        assert {(s.model, s.reason) for s in answer.skipped} == {
            ("cheap", "unhealthy"),
            ("strong", "unhealthy"),
        }
    finally:
        reset.healthy = True
        service.call(service.runtime.targets.check())
    answer = service.stub.Route(pb.RouteRequest(router="demo", prompt=MATH))
    assert list(answer.models) == ["cheap", "strong"]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the repository.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
]


def test_tools_pass_through_and_the_calls_are_attributed(http: httpx.Client, reset: FakeOpenAI) -> None:
    reset.modes["vendor/cheap-7b"] = "tools"  # a model served with tool calling on, like vLLM's parser
    body = {
        "model": "router:demo",
        "messages": [{"role": "user", "content": MATH}],
        "tools": TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    sent = reset.bodies[-1]
    assert (sent["tools"], sent["tool_choice"], sent["parallel_tool_calls"]) == (TOOLS, "auto", False)
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "read_file"
    assert answer.json()["taskrouter"]["tool_calls"] == ["read_file"]

    # The agent's next turn carries the call and its result: accepted, routed on the conversation.
    call = choice["message"]["tool_calls"][0]
    follow_up = {
        **body,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "def f(): return 17 * 23"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},  # the attribution rides on the usage chunk
    }
    events = []
    with http.stream("POST", "/v1/chat/completions", json=follow_up) as streamed:
        assert streamed.status_code == 200
        events = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
    deltas = [c["delta"] for e in events for c in e.get("choices") or []]
    assert any(d.get("tool_calls") for d in deltas)
    assert events[-1]["taskrouter"]["tool_calls"] == ["read_file"]  # from the name in the first delta


def test_a_model_without_tool_calling_says_what_vllm_needs(http: httpx.Client, reset: FakeOpenAI) -> None:
    reset.modes["vendor/cheap-7b"] = "no-tool-parser"  # vLLM started without --enable-auto-tool-choice
    body = {"model": "router:demo", "messages": [{"role": "user", "content": MATH}], "tools": TOOLS}
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "--enable-auto-tool-choice" in message and "--tool-call-parser <parser>" in message
    for bad, phrase in (
        ({"tools": {"read_file": {}}}, "tools must be a list"),
        ({"tools": [{"type": "function"}]}, "tools[0] must be"),
        ({"tool_choice": "always", "tools": TOOLS}, "tool_choice must be one of none, auto, required"),
        ({"tool_choice": "auto"}, "tool_choice needs tools"),
        ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls must be true or false"),
    ):
        plain = {k: v for k, v in body.items() if k != "tools"}
        refused = http.post("/v1/chat/completions", json={**plain, **bad})
        assert refused.status_code == 400 and phrase in refused.json()["error"]["message"], refused.text
