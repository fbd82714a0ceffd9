"""Metrics, the request log and the stall alarm, end to end: known traffic through the real service
(gRPC and HTTP, forwarding to a real OpenAI-protocol server on loopback), then `GET /metrics` is parsed
and every counter is checked against what the answers said."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from server.analyze.cli import main
from taskrouter.v1 import taskrouter_pb2 as pb
from tests.conftest import ServerThread, demo_service
from tests.fake_openai import MATH, OFF_TOPIC, POEM, FakeOpenAI


@pytest.fixture(scope="module")
def service(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("telemetry")
    thread = demo_service(
        fake,
        root,
        targets={"health_interval_s": 3600, "breaker_failures": 1000},
        batching={"max_queue_ms": 0},
        telemetry={"request_log": root / "log" / "requests.jsonl", "stall_after_s": 0.5},
    )
    yield thread
    thread.stop()


def scrape(service: ServerThread) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://127.0.0.1:{service.http_port}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@dataclass
class Traffic:
    classified: list[pb.ClassifyResponse]
    route: pb.RouteResponse
    poem: dict[str, Any]  # the HTTP answer's attribution
    stream_cost: float
    grpc_chat_cost: float
    log: Path


@pytest.fixture(scope="module")
def traffic(service: ServerThread, fake: FakeOpenAI) -> Traffic:
    """Known traffic, sent once: 5 Classify, 2 refused ones, a Route, a ClassifyBatch of 2, an HTTP chat
    whose first model is down, a streamed HTTP chat and a gRPC Chat."""
    stub = service.stub
    classified = [
        stub.Classify(pb.ClassifyRequest(router="demo", prompt=p)) for p in [MATH] * 3 + [OFF_TOPIC] * 2
    ]
    for request in (
        pb.ClassifyRequest(router="nope", prompt=MATH),
        pb.ClassifyRequest(router="demo", prompt=" "),
    ):
        with pytest.raises(grpc.RpcError):
            stub.Classify(request)
    batch = stub.ClassifyBatch(
        pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(router="demo", prompt=p) for p in (MATH, POEM)])
    )
    classified += list(batch.results)
    route = stub.Route(pb.RouteRequest(router="demo", prompt=MATH))
    service.runtime.targets.pools["gone"].endpoints[0].healthy = True  # `refused` died since the last probe
    with httpx.Client(base_url=f"http://127.0.0.1:{service.http_port}", timeout=30) as http:
        poem = http.post(
            "/v1/chat/completions",
            json={"model": "router:demo", "messages": [{"role": "user", "content": POEM}]},
        ).json()["taskrouter"]
        body = {"model": "router:demo", "messages": [{"role": "user", "content": MATH}], "stream": True}
        lines = http.post("/v1/chat/completions", json=body).text.splitlines()
    stream_cost = json.loads(next(x for x in lines if x.startswith(": taskrouter "))[13:])["cost_usd"]
    events = list(stub.Chat(pb.ChatRequest(model="router:demo", prompt=MATH), timeout=30))
    return Traffic(
        classified, route, poem, stream_cost, events[-1].end.cost_usd, service.cfg.telemetry.request_log
    )


def test_metrics_count_the_traffic_by_router_task_model_and_outcome(
    service: ServerThread, traffic: Traffic
) -> None:
    m = scrape(service)
    assert value(m, "taskrouter_requests_total", api="Classify", outcome="OK") == 5
    assert value(m, "taskrouter_requests_total", api="Classify", router="", outcome="NOT_FOUND") == 1
    assert (
        value(m, "taskrouter_requests_total", api="Classify", router="demo", outcome="INVALID_ARGUMENT") == 1
    )
    assert value(m, "taskrouter_requests_total", api="ClassifyBatch", outcome="OK") == 2
    first = traffic.route.models[0]
    assert value(m, "taskrouter_requests_total", api="Route", task="math", model=first, outcome="OK") == 1
    assert value(m, "taskrouter_requests_total", api="chat.completions", model="backup", outcome="OK") == 1
    assert value(m, "taskrouter_requests_total", api="chat.completions", model="cheap", outcome="OK") == 1
    assert value(m, "taskrouter_requests_total", api="Chat", task="math", model="cheap", outcome="OK") == 1

    # Classifications: the 7 Classify answers, the Route and the 3 chats, split as the answers were.
    matched = sum(r.matched for r in traffic.classified) + 4  # Route + 3 chats: math, poem, math, math
    total = len(traffic.classified) + 4
    assert value(m, "taskrouter_classifications_total", matched="true") == matched
    assert value(m, "taskrouter_classifications_total", matched="false") == total - matched
    fallbacks = sum(not r.matched for r in traffic.classified)
    assert fallbacks >= 1 and value(m, "taskrouter_classifications_total", task="fallback") == fallbacks
    assert value(m, "taskrouter_confidence_count", router="demo") == total
    assert value(m, "taskrouter_tokenize_seconds_count") == total
    assert value(m, "taskrouter_queue_seconds_count") == total
    assert value(m, "taskrouter_batch_size_sum") == total  # every classified prompt went through a batch
    assert value(m, "taskrouter_batch_size_count") == value(m, "taskrouter_inference_seconds_count") >= 1
    assert value(m, "taskrouter_request_seconds_count", api="Classify") == 7

    # The poem's first model was down: one target error, one fallback taken, answered by `backup`.
    assert [a["outcome"] for a in traffic.poem["attempts"]] == ["connection error", "ok"]
    assert value(m, "taskrouter_target_errors_total", model="refused", reason="connection") == 1
    assert value(m, "taskrouter_fallbacks_taken_total", router="demo", model="backup") == 1
    assert value(m, "taskrouter_target_seconds_count", model="backup") == 1
    assert value(m, "taskrouter_target_ttft_seconds_count", model="cheap") == 2  # two streamed chats
    cost = traffic.poem["cost_usd"] + traffic.stream_cost + traffic.grpc_chat_cost
    assert value(m, "taskrouter_cost_usd_total", router="demo") == pytest.approx(cost)
    assert value(m, "taskrouter_tokens_total", model="cheap", kind="completion") == 12  # 6 words each
    assert value(m, "taskrouter_classifier_stalled") == 0
    assert value(m, "taskrouter_queue_depth") == 0
    assert value(m, "taskrouter_admission_rejections_total") == 0


def test_request_log_has_a_line_per_request_and_no_prompt_text(traffic: Traffic) -> None:
    lines = [json.loads(x) for x in traffic.log.read_text().splitlines()]
    assert len(lines) == 13  # 7 Classify (2 refused), 2 ClassifyBatch, Route, 2 HTTP chats, gRPC Chat
    apis = [x["api"] for x in lines]
    assert apis.count("Classify") == 7 and apis.count("ClassifyBatch") == 2 and apis.count("Chat") == 1
    ok = [x for x in lines if x["api"] == "Classify" and x["outcome"] == "OK"]
    assert [x["task"] for x in ok] == [r.task for r in traffic.classified[:5]]
    assert all(x["router"] == "demo" and x["latency_ms"] > 0 and x["input_tokens"] > 0 for x in ok)
    route = next(x for x in lines if x["api"] == "Route")
    assert route["candidates"] == list(traffic.route.models) and route["cost_estimated"] is True
    poem = next(x for x in lines if x["api"] == "chat.completions" and x["task"] == "poem")
    assert poem["model"] == "backup" and poem["fallback_taken"] is True
    assert poem["cost_usd"] == pytest.approx(traffic.poem["cost_usd"]) and poem["cost_estimated"] is False
    refused = next(x for x in lines if x["outcome"] == "NOT_FOUND")
    assert "nope" in refused["error"] and "router" not in refused
    text = traffic.log.read_text()
    assert all(p not in text for p in (MATH, POEM, OFF_TOPIC))
    assert all("messages" not in x for x in lines)


def _health(service: ServerThread) -> int:
    stub = health_pb2_grpc.HealthStub(service.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service="taskrouter.v1.TaskRouter"), timeout=5).status


def _wait_for(check: Any, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_hung_classifier_is_an_alarm_in_health_and_metrics(service: ServerThread, traffic: Traffic) -> None:
    """Fault injection (the one way to hang a real model on purpose): the engine blocks until released."""
    engine = service.runtime.engine
    release = threading.Event()
    real = engine.score

    def hung(*args: Any) -> Any:
        release.wait(30)
        return real(*args)

    engine.score = hung  # type: ignore[method-assign]
    try:
        answer: list[Any] = []
        caller = threading.Thread(
            target=lambda: answer.append(
                service.stub.Classify(pb.ClassifyRequest(router="demo", prompt=MATH))
            )
        )
        caller.start()
        _wait_for(lambda: _health(service) == health_pb2.HealthCheckResponse.NOT_SERVING, "NOT_SERVING")
        assert value(scrape(service), "taskrouter_classifier_stalled") == 1
        assert value(scrape(service), "taskrouter_queue_depth") == 1
    finally:
        release.set()
        engine.score = real  # type: ignore[method-assign]
    caller.join(30)
    assert answer and answer[0].task == "math"  # the stalled request still got its answer
    _wait_for(lambda: _health(service) == health_pb2.HealthCheckResponse.SERVING, "SERVING again")
    assert value(scrape(service), "taskrouter_classifier_stalled") == 0


def test_a_failing_classifier_is_an_alarm_not_fast_errors(service: ServerThread, traffic: Traffic) -> None:
    engine = service.runtime.engine
    real = engine.score

    def broken(*args: Any) -> Any:
        raise RuntimeError("device lost")

    engine.score = broken  # type: ignore[method-assign]
    try:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as failed:
                service.stub.Classify(pb.ClassifyRequest(router="demo", prompt=MATH))
            assert failed.value.code() == grpc.StatusCode.INTERNAL
        _wait_for(lambda: _health(service) == health_pb2.HealthCheckResponse.NOT_SERVING, "NOT_SERVING")
        m = scrape(service)
        assert (
            value(m, "taskrouter_classifier_stalled") == 1
            and value(m, "taskrouter_batch_failures_total") == 3
        )
    finally:
        engine.score = real  # type: ignore[method-assign]
    service.stub.Classify(pb.ClassifyRequest(router="demo", prompt=MATH))  # a batch succeeds: recovered
    _wait_for(lambda: _health(service) == health_pb2.HealthCheckResponse.SERVING, "SERVING again")


def test_analyze_turns_the_log_of_this_run_into_a_report(
    traffic: Traffic, service: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    catalog = str(service.cfg.routers.catalog)
    assert main([str(traffic.log), "--out", str(out), "--catalog", catalog, "--baseline", "strong"]) == 0
    page = out.read_text()
    assert page.count("<svg") >= 5  # rates over time, tasks, models, latency, confidence, cost
    assert "demo / math" in page and "demo / fallback" in page and "all to strong" in page
    summary = capsys.readouterr().out
    lines = [json.loads(x) for x in traffic.log.read_text().splitlines()]
    classified = [x for x in lines if "matched" in x]
    rate = sum(x["matched"] for x in classified) / len(classified)
    assert f"{len(lines)} requests" in summary and f"match rate {100 * rate:.1f}%" in summary
    # The routed requests went to cheaper models than `strong`: a saving, computed from the log's tokens.
    assert "saving" in summary and "routed $" in summary
    assert main([str(traffic.log), "--out", str(out), "--catalog", catalog, "--baseline", "nope"]) == 2
    assert "known: backup, cheap" in capsys.readouterr().err


def test_analyze_slices_by_api_and_router_and_keeps_planned_apart(
    traffic: Traffic, service: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, catalog = tmp_path / "report.html", str(service.cfg.routers.catalog)
    lines = [json.loads(x) for x in traffic.log.read_text().splitlines()]
    common = ["--out", str(out), "--catalog", catalog, "--baseline", "strong"]
    assert main([str(traffic.log), *common, "--api", "Classify"]) == 0
    summary = capsys.readouterr().out
    assert (
        f"{sum(x['api'] == 'Classify' for x in lines)} requests" in summary and "models served" not in summary
    )
    assert main([str(traffic.log), *common]) == 0
    summary = capsys.readouterr().out
    # The Route call chose a model but called none: counted apart from the models that answered.
    served = {x["model"] for x in lines if x["api"] in ("Chat", "chat.completions") and x["outcome"] == "OK"}
    assert "planned only (Route, Playground; never called): " in summary
    assert all(m in summary.split("models served: ")[1].split("\n")[0] for m in served)
    assert main([str(traffic.log), *common, "--router", "nope"]) == 2
    assert "no request lines matching" in capsys.readouterr().err

    # The bill: served calls only, at their logged tokens; routed cost equals what the log recorded.
    assert (
        main(["cost", str(traffic.log), "--catalog", catalog, "--baseline", "strong", "--router", "demo"])
        == 0
    )
    table = capsys.readouterr().out
    billed = [
        x
        for x in lines
        if x["api"] in ("Chat", "chat.completions")
        and x["outcome"] == "OK"
        and x.get("prompt_tokens") is not None
    ]
    total = next(row for row in table.splitlines() if row.startswith("| **total**"))
    assert f"| {len(billed):,} |" in total and f"${sum(x['cost_usd'] for x in billed):,.2f}" in total
    assert main(["cost", str(traffic.log), "--catalog", catalog, "--baseline", "strong", "--month"]) == 0
    assert "requests / month" in capsys.readouterr().out
