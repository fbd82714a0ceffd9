"""Locust load test of the routing overhead: gRPC Classify and Route, and a chat completion through
taskrouter's OpenAI-compatible endpoint next to the same request sent straight to the target.

    locust -f loadtests/locustfile.py --headless -u 32 -r 32 -t 60s \
        --host 127.0.0.1:50051 TASKROUTER_HTTP=http://127.0.0.1:8080 TARGET_URL=http://127.0.0.1:8000/v1

Environment: TASKROUTER_ROUTER (default `support`), TASKROUTER_HTTP (enables the chat users; with
TARGET_URL and TARGET_MODEL, the direct-call user too), TASKROUTER_PROMPTS (a YAML like
tests/data/default_router_prompts.yaml; default: that file).

Locust rounds response times under 100 ms to whole milliseconds, which hides what this measures; this
file replaces its bucketing with 3 significant digits (0.347 ms stays 0.347 ms) and prints its own
p50/p90/p99 table with sub-millisecond precision when the run ends.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists: gRPC's I/O must yield to gevent's loop

import grpc  # noqa: E402
import locust.stats  # noqa: E402
import yaml  # noqa: E402
from locust import FastHttpUser, User, constant, events, task  # noqa: E402

from loadtests.precision import bucket_response_time  # noqa: E402
from taskrouter.v1 import taskrouter_pb2 as pb  # noqa: E402
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc  # noqa: E402

DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "default_router_prompts.yaml"
REPORTED = (0.5, 0.9, 0.99)


locust.stats.bucket_response_time = bucket_response_time


def prompts() -> list[str]:
    data = yaml.safe_load(Path(os.environ.get("TASKROUTER_PROMPTS", DEFAULT_PROMPTS)).read_text())
    router = os.environ.get("TASKROUTER_ROUTER", "support")
    return [p for task_prompts in data[router].values() for p in task_prompts]


class Reporter(grpc.UnaryUnaryClientInterceptor):
    """Reports every unary call to Locust: name, time (float ms), size, and the error if any."""

    def __init__(self, fire: Callable[..., Any]) -> None:
        self._fire = fire

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        start = time.perf_counter()
        outcome = continuation(details, request)
        error = outcome.exception()  # the blocking call has completed by now
        self._fire(
            request_type="grpc",
            name=details.method.rsplit("/", 1)[-1],
            response_time=(time.perf_counter() - start) * 1e3,
            response_length=0 if error else outcome.result().ByteSize(),
            exception=error,
            context={},
        )
        return outcome


class GrpcUser(User):
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.channel = grpc.intercept_channel(
            grpc.insecure_channel(self.host), Reporter(self.environment.events.request.fire)
        )
        self.stub = pb_grpc.TaskRouterStub(self.channel)
        self.router = os.environ.get("TASKROUTER_ROUTER", "support")
        self.prompts = prompts()

    def on_stop(self) -> None:
        self.channel.close()


class ClassifyUser(GrpcUser):
    @task
    def classify(self) -> None:
        try:
            self.stub.Classify(pb.ClassifyRequest(router=self.router, prompt=random.choice(self.prompts)))
        except grpc.RpcError:
            pass  # reported by the interceptor


class RouteUser(GrpcUser):
    @task
    def route(self) -> None:
        try:
            self.stub.Route(pb.RouteRequest(router=self.router, prompt=random.choice(self.prompts)))
        except grpc.RpcError:
            pass


class RoutedChatUser(FastHttpUser):
    """A chat completion through `router:<name>`: classification + policy + forwarding + the model."""

    abstract = not os.environ.get("TASKROUTER_HTTP")  # runs only when the endpoint is configured
    wait_time = constant(0)
    host = os.environ.get("TASKROUTER_HTTP", "")

    def on_start(self) -> None:
        self.prompts = prompts()
        self.model = f"router:{os.environ.get('TASKROUTER_ROUTER', 'support')}"

    @task
    def chat(self) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": random.choice(self.prompts)}]}
        self.client.post("/v1/chat/completions", json={**body, "max_tokens": 1}, name="routed chat")


class DirectChatUser(FastHttpUser):
    """The same request straight to the target: the baseline the routed chat is compared with."""

    abstract = not (os.environ.get("TARGET_URL") and os.environ.get("TARGET_MODEL"))
    wait_time = constant(0)
    host = os.environ.get("TARGET_URL", "")

    def on_start(self) -> None:
        self.prompts = prompts()
        self.model = os.environ.get("TARGET_MODEL", "")

    @task
    def chat(self) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": random.choice(self.prompts)}]}
        self.client.post("/chat/completions", json={**body, "max_tokens": 1}, name="direct chat")


@events.quitting.add_listener
def _print_sub_ms_table(environment: Any, **_: Any) -> None:
    print(
        f"{'name':24s} {'requests':>9s} {'fails':>6s} "
        + " ".join(f"{'p' + str(int(q * 100)):>9s}" for q in REPORTED)
    )
    for (name, _method), entry in sorted(environment.stats.entries.items()):
        cells = " ".join(f"{entry.get_response_time_percentile(q):7.3f}ms" for q in REPORTED)
        print(f"{name:24s} {entry.num_requests:9d} {entry.num_failures:6d} {cells}")
