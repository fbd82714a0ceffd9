"""Classify benchmark over loopback gRPC (not a test): closed-loop and open-loop drivers over concurrency
(or arrival rate) and prompt length, printing p50/p90/p99, throughput, the batch-size distribution and
where the server's time went (tokenisation, queueing, inference).

    python -m loadtests.bench_classify                                # starts its own server
    python -m loadtests.bench_classify --target HOST:PORT             # measures a running server
    python -m loadtests.bench_classify --rates 50 100 200             # add open-loop runs
    python -m loadtests.bench_classify --compare-batching             # c=32 with batching on vs off
    python -m loadtests.bench_classify --batch-rows 256               # saturation with ClassifyBatch

Closed loop: `concurrency` callers each send the next request when the last one answers (what a
gateway with a fixed connection pool does). Open loop: requests start on a fixed schedule whatever
the answers (what independent users do); latency counts from the scheduled start, so a stalled
server cannot hide its queue (no coordinated omission), and RESOURCE_EXHAUSTED rejections are counted.
Prompts are real test prompts cut or repeated to exactly N tokens. Client and server share this
machine: compare numbers as ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from transformers import AutoTokenizer

from models import DEFAULT_CHECKPOINT
from models.checkpoint import CONFIG_FILE
from models.encoder import resolve_encoder_source
from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

PROMPTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "default_router_prompts.yaml"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BACKOFF_S = 0.05  # a closed-loop caller's pause after RESOURCE_EXHAUSTED


def prompts_of_length(tokens: int) -> list[pb.ClassifyRequest]:
    """The shipped routers' test prompts, each cut or repeated to `tokens` encoder tokens."""
    encoder = json.loads((DEFAULT_CHECKPOINT / CONFIG_FILE).read_text())["encoder"]
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder_source(encoder))
    data = yaml.safe_load(PROMPTS.read_text())
    out = []
    for router, tasks in data.items():
        for texts in tasks.values():
            for text in texts:
                ids: list[int] = []
                while len(ids) < tokens:
                    ids += tokenizer(text, add_special_tokens=False)["input_ids"]
                # The server adds [CLS] and [SEP]: two of the budget.
                prompt = tokenizer.decode(ids[: max(1, tokens - 2)])
                out.append(pb.ClassifyRequest(router=router, prompt=prompt))
    return out


def start_server(
    extra: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, int | None]:
    """Start `python -m server.main` on free ports; (process, gRPC host:port, HTTP port) once SERVING."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.main", "--port", "0", "--http-port", "0", *extra],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    assert proc.stderr is not None
    http_port = None
    for line in proc.stderr:
        http = re.search(r"and [\d.]+:(\d+) \(HTTP\)", line)
        if http:
            http_port = int(http.group(1))
        # With --workers, the parent says when every worker is SERVING; each worker says it alone.
        ready = r"workers SERVING on" if "--workers" in extra else r"SERVING on"
        found = re.search(ready + r" ([\d.]+):(\d+)", line)
        if found:
            # Keep draining the server's log so a full pipe can never stall it mid-benchmark.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, f"{found.group(1)}:{found.group(2)}", http_port
    raise RuntimeError("server exited before SERVING")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Sample:
    """One run's answers: client latency and the server's own split of each request."""

    latency_ms: list[float] = field(default_factory=list)
    tokenize_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    rejected: int = 0
    failed: int = 0
    elapsed_s: float = 0.0

    def add(self, started: float, response: pb.ClassifyResponse) -> None:
        self.latency_ms.append((time.perf_counter() - started) * 1e3)
        self.tokenize_ms.append(response.timing.tokenize_ms)
        self.queue_ms.append(response.timing.queue_ms)
        self.inference_ms.append(response.timing.inference_ms)
        self.batch_sizes.append(response.timing.batch_size)

    def row(self, label: str) -> str:
        lat = self.latency_ms
        if not lat:
            return f"{label:>16}  no answers ({self.rejected} rejected, {self.failed} failed)"
        hist = Counter(next(b for b in BATCH_BUCKETS if s <= b) for s in self.batch_sizes)
        dist = " ".join(f"<={b}:{hist[b] * 100 // len(lat)}%" for b in BATCH_BUCKETS if hist[b])
        return (
            f"{label:>16} {len(lat) / self.elapsed_s:8.1f}/s  p50 {percentile(lat, 0.5):7.2f}"
            f"  p90 {percentile(lat, 0.9):7.2f}  p99 {percentile(lat, 0.99):7.2f} ms"
            f" | tok {statistics.mean(self.tokenize_ms):5.2f} queue {statistics.mean(self.queue_ms):6.2f}"
            f" infer {statistics.mean(self.inference_ms):6.2f} ms"
            f" | batch {statistics.mean(self.batch_sizes):5.1f}"
            f" [{dist}]"
            + (f" rejected {self.rejected}" if self.rejected else "")
            + (f" failed {self.failed}" if self.failed else "")
        )


async def closed_loop(
    stubs: list[pb_grpc.TaskRouterStub], reqs: list[pb.ClassifyRequest], concurrency: int, duration_s: float
) -> Sample:
    sample = Sample()
    deadline = time.perf_counter() + duration_s

    async def caller(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                sample.add(started, await stubs[offset % len(stubs)].Classify(reqs[i % len(reqs)]))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    sample.rejected += 1
                    await asyncio.sleep(BACKOFF_S)  # as the message asks; no retry storm
                else:
                    sample.failed += 1
            i += concurrency

    began = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    sample.elapsed_s = time.perf_counter() - began
    return sample


async def open_loop(
    stubs: list[pb_grpc.TaskRouterStub], reqs: list[pb.ClassifyRequest], rate: float, duration_s: float
) -> Sample:
    sample = Sample()
    count = int(rate * duration_s)

    async def one(i: int, scheduled: float) -> None:
        try:
            sample.add(scheduled, await stubs[i % len(stubs)].Classify(reqs[i % len(reqs)]))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                sample.rejected += 1
            else:
                sample.failed += 1

    began = time.perf_counter()
    tasks = []
    for i in range(count):
        scheduled = began + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    sample.elapsed_s = time.perf_counter() - began
    return sample


async def batch_saturation(
    stubs: list[pb_grpc.TaskRouterStub],
    reqs: list[pb.ClassifyRequest],
    rows: int,
    concurrency: int,
    duration_s: float,
) -> str:
    """Closed loop of ClassifyBatch calls of `rows` prompts each: prompts per second at saturation."""
    batch = pb.ClassifyBatchRequest(requests=[reqs[i % len(reqs)] for i in range(rows)])
    calls: list[float] = []
    rejected = 0
    deadline = time.perf_counter() + duration_s

    async def caller(k: int) -> None:
        nonlocal rejected
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await stubs[k % len(stubs)].ClassifyBatch(batch)
                calls.append((time.perf_counter() - started) * 1e3)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                rejected += 1
                await asyncio.sleep(BACKOFF_S)

    began = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - began
    if not calls:
        return f"ClassifyBatch x{rows} c={concurrency}: no answers ({rejected} rejected)"
    return (
        f"ClassifyBatch x{rows} c={concurrency}: {len(calls) * rows / elapsed:9.1f} prompts/s"
        f"  call p50 {percentile(calls, 0.5):8.2f}  p99 {percentile(calls, 0.99):8.2f} ms"
        + (f"  rejected {rejected}" if rejected else "")
    )


async def run(target: str, args: argparse.Namespace) -> list[Sample]:
    results = []
    # One channel is one TCP connection; with --workers N the kernel spreads connections, not
    # requests, so a client needs several channels to reach every worker.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.channels)
    ]
    try:
        stubs = [pb_grpc.TaskRouterStub(channel) for channel in channels]
        for tokens in args.tokens:
            reqs = prompts_of_length(tokens)
            for i, req in enumerate(reqs[: max(20, 2 * len(stubs))]):  # warm every connection
                await stubs[i % len(stubs)].Classify(req)
            print(f"\n{target}: {tokens}-token prompts, {len(stubs)} channel(s)")
            if args.batch_rows:
                for concurrency in args.concurrency:
                    line = await batch_saturation(stubs, reqs, args.batch_rows, concurrency, args.duration_s)
                    print(line, flush=True)
                continue
            for concurrency in args.concurrency:
                sample = await closed_loop(stubs, reqs, concurrency, args.duration_s)
                print(sample.row(f"closed c={concurrency}"), flush=True)
                results.append(sample)
            for rate in args.rates:
                sample = await open_loop(stubs, reqs, rate, args.duration_s)
                print(sample.row(f"open {rate:g}/s"), flush=True)
                results.append(sample)
    finally:
        for channel in channels:
            await channel.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="HOST:PORT of a running server; default: start one")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--rates", type=float, nargs="*", default=[], help="open-loop arrival rates (req/s)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[32], help="prompt lengths in tokens")
    parser.add_argument("--duration-s", type=float, default=10.0, help="per concurrency or rate")
    parser.add_argument(
        "--channels", type=int, default=1, help="gRPC connections (several reach every worker)"
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=0,
        help="instead: closed loop of ClassifyBatch calls of this many prompts",
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for the started server")
    parser.add_argument(
        "--compare-batching",
        action="store_true",
        help="closed loop at concurrency 32 against a server with batching, then one with "
        "batching.max_batch_requests=1, and print the throughput ratio",
    )
    args = parser.parse_args()
    if args.compare_batching:
        args.concurrency, args.rates = [32], []
        throughput = {}
        for label, env in (
            ("batching on", {}),
            ("batching off", {"TASKROUTER_BATCHING__MAX_BATCH_REQUESTS": "1"}),
        ):
            proc, target, _ = start_server(args.server_arg, env)
            try:
                print(f"\n== {label}")
                (sample,) = asyncio.run(run(target, args))
                throughput[label] = len(sample.latency_ms) / sample.elapsed_s
            finally:
                proc.terminate()
                proc.wait(30)
        ratio = throughput["batching on"] / throughput["batching off"]
        print(f"\nbatching on / off at concurrency 32: {ratio:.2f}x throughput")
        return
    proc = None
    target = args.target
    if target is None:
        proc, target, _ = start_server(args.server_arg)
    try:
        asyncio.run(run(target, args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
