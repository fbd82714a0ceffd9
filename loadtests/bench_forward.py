"""Routing overhead benchmark (not a test): chat completions sent straight to a vLLM server vs the same
requests through taskrouter's OpenAI-compatible endpoint, as a plain model (forwarding only) and as
`router:<name>` (classification + policy + forwarding). Prints p50/p99 of each and the overhead.

    python -m loadtests.bench_forward                          # launches vLLM (tiny local Llama) itself
    python -m loadtests.bench_forward --requests 500 --max-tokens 1

Needs vLLM's environment (`scripts/setup_vllm_env.sh`). The three kinds of request are interleaved, so
machine noise hits all of them alike; compare within one run. With max_tokens 1 the model's own time is
as small as it gets, so the difference is what routing adds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from loadtests.bench_classify import percentile, start_server
from tests.conftest import free_port
from tests.tiny_llama import SERVED_NAME, VLLM_PYTHON, build_tiny_llama, tiny_vllm_pool

PROMPTS = [
    "What is 17 multiplied by 23?",
    "Write a haiku about the sea.",
    "Summarise the plot of Hamlet in one sentence.",
    "Why does my Python loop never end?",
]


def write_config(root: Path, vllm_port: int) -> list[str]:
    model = build_tiny_llama(root / "tiny-llama")
    pool = tiny_vllm_pool(model, vllm_port)
    price = {"input_price_per_mtok": 0.1, "output_price_per_mtok": 0.2, "context_tokens": 2048}
    catalog = {
        "pools": {"local": pool},
        "models": {"tiny": {**price, "pool": "local", "upstream": SERVED_NAME}},
    }
    (root / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    routers = root / "routers"
    routers.mkdir(exist_ok=True)
    tasks = [
        ("math", "Solve a math problem."),
        ("writing", "Write a poem, story or summary."),
        ("code", "Fix code."),
    ]
    router = {
        "name": "bench",
        "policies": [{"custom_task": {"name": n, "description": d}, "models": ["tiny"]} for n, d in tasks],
        "fallback_models": ["tiny"],
    }
    (routers / "bench.yaml").write_text(yaml.safe_dump(router))
    return ["--catalog", str(root / "catalog.yaml"), "--routers-dir", str(routers)]


def measure(vllm_port: int, http_port: int, n: int, max_tokens: int) -> dict[str, list[float]]:
    kinds = {
        "direct to vLLM": (f"http://127.0.0.1:{vllm_port}/v1/chat/completions", SERVED_NAME),
        "taskrouter, plain model": (f"http://127.0.0.1:{http_port}/v1/chat/completions", "tiny"),
        "taskrouter, router:bench": (f"http://127.0.0.1:{http_port}/v1/chat/completions", "router:bench"),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with httpx.Client(timeout=60) as client:
        for i in range(n + 10):
            for kind, (url, model) in kinds.items():
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                start = time.perf_counter()
                response = client.post(url, json=body)
                elapsed = (time.perf_counter() - start) * 1e3
                response.raise_for_status()
                if i >= 10:  # the first rounds warm connections and caches
                    times[kind].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind, concurrency 1")
    parser.add_argument("--max-tokens", type=int, default=1)
    args = parser.parse_args()
    if not VLLM_PYTHON.exists():
        raise SystemExit("vLLM's environment is missing: run scripts/setup_vllm_env.sh")
    with tempfile.TemporaryDirectory() as tmp:
        vllm_port = free_port()
        proc, _, http_port = start_server(write_config(Path(tmp), vllm_port))
        assert http_port is not None
        try:
            times = measure(vllm_port, http_port, args.requests, args.max_tokens)
        finally:
            proc.terminate()
            proc.wait(60)
    direct = times["direct to vLLM"]
    print(f"{args.requests} requests of each kind, concurrency 1, max_tokens {args.max_tokens}, interleaved")
    for kind, values in times.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        d50, d99 = p50 - percentile(direct, 0.5), p99 - percentile(direct, 0.99)
        extra = f"  overhead p50 {d50:+7.2f} ms  p99 {d99:+7.2f} ms"
        print(f"{kind:26s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms{'' if values is direct else extra}")


if __name__ == "__main__":
    main()
