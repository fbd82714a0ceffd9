"""A real vLLM server behind a `vllm` pool: the service launches it (from vLLM's own virtual
environment, `scripts/setup_vllm_env.sh`), waits for its health, routes chat requests to it, restarts
it when it dies and stops it on shutdown. The model is a tiny random Llama built locally
(tests/tiny_llama.py): its words are gibberish; the protocol, the streaming and the token counts are real."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from tests.conftest import ServerThread, free_port, make_config
from tests.tiny_llama import SERVED_NAME, VLLM_PYTHON, build_tiny_llama, tiny_vllm_pool

pytestmark = pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason="vLLM's environment is missing: run scripts/setup_vllm_env.sh (make test does)",
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("vllm")
    model_dir = build_tiny_llama(root / "tiny-llama")
    catalog = {
        "pools": {
            "local": tiny_vllm_pool(model_dir, free_port()),
        },
        "models": {
            "tiny": {
                "pool": "local",
                "upstream": SERVED_NAME,
                "input_price_per_mtok": 0.2,
                "output_price_per_mtok": 0.4,
                "context_tokens": 2048,
            }
        },
    }
    (root / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    routers = root / "routers"
    routers.mkdir()
    router = {
        "name": "local",
        "description": "everything to the local pool",
        "policies": [
            {"custom_task": {"name": "math", "description": "Solve a math problem."}, "models": ["tiny"]}
        ],
        "fallback_models": ["tiny"],
    }
    (routers / "local.yaml").write_text(yaml.safe_dump(router))
    cfg = make_config(
        routers={"dir": routers, "catalog": root / "catalog.yaml"},
        targets={"health_interval_s": 0.5, "first_token_timeout_s": 60},
    )
    thread = ServerThread(cfg).load()  # returns once the launched replica answers /health
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def client(service: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{service.http_port}/v1", api_key="unused", max_retries=0)


def test_launched_replica_serves_routed_requests(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="router:local",
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    answer = raw.parse()
    assert raw.headers["x-model-router-selected-route"] in ("math", "fallback")
    assert answer.model == "tiny"
    assert answer.usage.completion_tokens == 8
    served = answer.model_extra["taskrouter"]
    assert served["completion_tokens"] == 8 and served["prompt_tokens"] == answer.usage.prompt_tokens
    assert served["cost_usd"] == pytest.approx((served["prompt_tokens"] * 0.2 + 8 * 0.4) / 1e6)


def test_streaming_through_the_pool(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="router:local",
            messages=[{"role": "user", "content": "Count to three."}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert {c.model for c in chunks} == {"tiny"}
    assert chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].model_extra["taskrouter"]["model"] == "tiny"


def test_dead_replica_is_restarted_and_serves_again(service: ServerThread, client: openai.OpenAI) -> None:
    replica = service.runtime.targets.replicas[0]
    old_pid = replica.process.pid
    os.killpg(old_pid, signal.SIGKILL)
    endpoint = service.runtime.targets.pools["local"].endpoints[0]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (replica.process.pid != old_pid and endpoint.healthy):
        time.sleep(0.5)
    assert replica.restarts == 1 and replica.process.pid != old_pid and endpoint.healthy
    answer = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert answer.model == "tiny"


def _running_in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def test_shutdown_stops_the_replica(service: ServerThread) -> None:
    # Runs last in this module: stopping the service must leave no vLLM process behind.
    process = service.runtime.targets.replicas[0].process
    service.stop()
    assert process.returncode is not None
    deadline = time.monotonic() + 10
    while _running_in_group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running_in_group(process.pid) == []
