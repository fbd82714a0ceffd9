"""Classify latency and throughput benchmark (not a test): p50/p99 at concurrency 1, throughput at 32.

    python -m loadtests.bench_classify                      # starts its own server (CPU unless CUDA)
    python -m loadtests.bench_classify --target HOST:PORT   # measures a running server

Prompts are the shipped routers' test prompts, cycled. Client and server share this machine, so
compare numbers as ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import yaml

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

PROMPTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "default_router_prompts.yaml"


def requests() -> list[pb.ClassifyRequest]:
    data = yaml.safe_load(PROMPTS.read_text())
    return [
        pb.ClassifyRequest(router=r, prompt=p)
        for r, tasks in data.items()
        for ps in tasks.values()
        for p in ps
    ]


def start_server(extra: list[str]) -> tuple[subprocess.Popen[str], str, int | None]:
    """Start `python -m server.main` on free ports; (process, gRPC host:port, HTTP port) once SERVING."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.main", "--port", "0", "--http-port", "0", *extra],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    http_port = None
    for line in proc.stderr:
        http = re.search(r"and [\d.]+:(\d+) \(HTTP\)", line)
        if http:
            http_port = int(http.group(1))
        found = re.search(r"SERVING on ([\d.]+):(\d+)", line)
        if found:
            # Keep draining the server's log so a full pipe can never stall it mid-benchmark.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, f"{found.group(1)}:{found.group(2)}", http_port
    raise RuntimeError("server exited before SERVING")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(target: str, n_sequential: int, concurrency: int, duration_s: float) -> None:
    reqs = requests()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.TaskRouterStub(channel)
        for req in reqs[:20]:  # warm the connection and the server
            await stub.Classify(req)

        client_ms, server_ms = [], []
        for i in range(n_sequential):
            start = time.perf_counter()
            response = await stub.Classify(reqs[i % len(reqs)])
            client_ms.append((time.perf_counter() - start) * 1e3)
            server_ms.append(response.latency_ms)

        done = 0
        batch_sizes: list[int] = []
        lat: list[float] = []
        deadline = time.perf_counter() + duration_s

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await stub.Classify(reqs[i % len(reqs)])
                lat.append((time.perf_counter() - start) * 1e3)
                batch_sizes.append(response.timing.batch_size)
                done += 1
                i += concurrency

        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - began

    print(
        f"target {target}, {n_sequential} sequential requests, {concurrency} concurrent for {duration_s:.0f}s"
    )
    print(
        f"concurrency 1 : client p50 {percentile(client_ms, 0.5):7.2f} ms"
        f"  p99 {percentile(client_ms, 0.99):7.2f} ms"
        f"  | server p50 {percentile(server_ms, 0.5):6.2f} ms  p99 {percentile(server_ms, 0.99):6.2f} ms"
        f"  | {n_sequential / (sum(client_ms) / 1e3):6.1f} req/s"
    )
    print(
        f"concurrency {concurrency}: {done / elapsed:7.1f} req/s  p50 {percentile(lat, 0.5):7.2f} ms"
        f"  p99 {percentile(lat, 0.99):7.2f} ms  mean batch {statistics.mean(batch_sizes):5.1f}"
        f"  max batch {max(batch_sizes)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="HOST:PORT of a running server; default: start one")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests at concurrency 1")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for the started server")
    args = parser.parse_args()
    proc = None
    target = args.target
    if target is None:
        proc, target, _ = start_server(args.server_arg)
    try:
        asyncio.run(run(target, args.requests, args.concurrency, args.duration_s))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
