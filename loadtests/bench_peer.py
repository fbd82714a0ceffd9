"""taskrouter against the embedding server people would pick instead (not a test): infinity-emb serving
the same all-MiniLM-L6-v2 base on its best CPU engine (optimum, int8 ONNX, batch 32, mean pooling), the
same prompts, closed loop, the two sides alternating round by round, each driven by a low-overhead
client (gRPC Classify for us; a minimal keep-alive HTTP/1.1 client for the peer: httpx's own CPU cost
would flatten the comparison). Prints p50/p90/p99 and throughput per side and round, then the medians
over rounds and the ratios.

    scripts/setup_peer_env.sh                     # once: the peer's venv and its ONNX int8 model
    python -m loadtests.bench_peer                # C=1 and C=32, 3 rounds of 10 s per side
    python -m loadtests.bench_peer --server-arg=--workers --server-arg=2 --channels 32
    python -m loadtests.bench_peer --peer naive   # against loadtests/naive_peer.py (no setup needed)

Both servers and the client share this machine: compare the ratios, within one run.
Things the peer needs (infinity-emb 0.0.78, optimum 2.x): it only finds a local ONNX file when started
inside the model's folder with `--model-id .`; its optimum engine pools CLS unless told
`--pooling-method mean`; it waits a fixed 5 ms per batch to collect one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loadtests.bench_classify import percentile, prompts_of_length, start_server
from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-peer"
PEER_MODEL = Path.home() / ".cache" / "taskrouter" / "peer-minilm-onnx"


@dataclass
class Run:
    latency_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    failed: int = 0

    @property
    def throughput(self) -> float:
        return len(self.latency_ms) / self.elapsed_s if self.elapsed_s else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latency_ms, q) if self.latency_ms else float("nan")

    def row(self, label: str) -> str:
        return (
            f"{label:>22} {self.throughput:8.1f}/s  p50 {self.p(0.5):7.2f}  p90 {self.p(0.9):7.2f}"
            f"  p99 {self.p(0.99):7.2f} ms" + (f"  failed {self.failed}" if self.failed else "")
        )


class KeepAliveClient:
    """One HTTP/1.1 connection, requests one after another: the least a client can cost per call."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status = await self.reader.readline()
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            data = b""
            while (size := int((await self.reader.readline()).strip() or b"0", 16)) > 0:
                data += await self.reader.readexactly(size + 2)
            await self.reader.readline()
        else:
            data = await self.reader.readexactly(length)
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"peer answered {status!r}: {data[:200]!r}")
        return data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def closed_loop(
    call: Callable[[int, int], Awaitable[object]], concurrency: int, count: int, duration_s: float
) -> Run:
    """`concurrency` callers; caller k sends request i with `call(k, i)` when its last one answered."""
    run = Run()
    deadline = time.perf_counter() + duration_s

    async def caller(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call(k, i % count)
                run.latency_ms.append((time.perf_counter() - started) * 1e3)
            except Exception:  # noqa: BLE001 - counted, the loop goes on
                run.failed += 1
            i += concurrency

    began = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    run.elapsed_s = time.perf_counter() - began
    return run


async def ours(
    target: str, reqs: list[pb.ClassifyRequest], concurrency: int, duration_s: float, channels: int = 1
) -> Run:
    """Caller k uses channel k % channels: with --workers N the kernel spreads connections, not
    requests, so reaching every worker takes at least N channels."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.aio.insecure_channel(target, options=options) for _ in range(min(channels, concurrency))]
    stubs = [pb_grpc.TaskRouterStub(c) for c in chans]
    try:
        return await closed_loop(
            lambda k, i: stubs[k % len(stubs)].Classify(reqs[i]), concurrency, len(reqs), duration_s
        )
    finally:
        for channel in chans:
            await channel.close()


async def peer(port: int, texts: list[str], concurrency: int, duration_s: float) -> Run:
    clients = [KeepAliveClient("127.0.0.1", port) for _ in range(concurrency)]
    bodies = [json.dumps({"model": ".", "input": [t]}).encode() for t in texts]
    try:
        return await closed_loop(
            lambda k, i: clients[k].post("/embeddings", bodies[i]), concurrency, len(bodies), duration_s
        )
    finally:
        for client in clients:
            await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_peer(venv: Path, model: Path, batch_size: int) -> tuple[subprocess.Popen[bytes], int]:
    if not (venv / "bin" / "infinity_emb").exists() or not model.is_dir():
        raise SystemExit(f"no peer at {venv} / {model}: run scripts/setup_peer_env.sh first")
    port = free_port()
    command = [
        str(venv / "bin" / "infinity_emb"), "v2", "--model-id", ".", "--engine", "optimum",
        "--pooling-method", "mean", "--batch-size", str(batch_size), "--device", "cpu",
        "--port", str(port), "--no-model-warmup",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        cwd=model,  # infinity-emb + optimum 2.x find a local ONNX file only this way
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "INFINITY_ANONYMOUS_USAGE_STATS": "0", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.stderr is not None
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the peer exited during start-up (run it by hand to see why)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        raise RuntimeError("the peer did not open its port within 180 s")
    asyncio.run(peer(port, ["warm up"], 1, 2.0))  # loads the session, proves the endpoint answers
    return proc, port


def start_naive() -> tuple[subprocess.Popen[str], str]:
    """loadtests/naive_peer.py on a free port, once it says SERVING."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtests.naive_peer", "--port", str(port)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "SERVING on" in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, f"127.0.0.1:{port}"
    raise RuntimeError("the naive peer exited before SERVING")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--duration-s", type=float, default=10.0, help="per side, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32, help="prompt length in tokens")
    parser.add_argument(
        "--peer",
        choices=["infinity", "naive"],
        default="infinity",
        help="infinity-emb, or loadtests/naive_peer.py",
    )
    parser.add_argument("--peer-venv", type=Path, default=PEER_VENV)
    parser.add_argument("--peer-model", type=Path, default=PEER_MODEL)
    parser.add_argument("--peer-batch-size", type=int, default=32)
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for our server")
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels (connections) on our side")
    args = parser.parse_args()

    reqs = prompts_of_length(args.tokens)
    texts = [r.prompt for r in reqs]
    server, target, _ = start_server(args.server_arg)
    if args.peer == "naive":
        peer_proc, naive_target = start_naive()

        def run_peer(c: int) -> Run:
            return asyncio.run(ours(naive_target, reqs, c, args.duration_s, args.channels))
    else:
        peer_proc, peer_port = start_peer(args.peer_venv, args.peer_model.expanduser(), args.peer_batch_size)

        def run_peer(c: int) -> Run:
            return asyncio.run(peer(peer_port, texts, c, args.duration_s))

    runs: dict[tuple[str, int], list[Run]] = {}
    try:
        asyncio.run(ours(target, reqs, 1, 2.0))  # warm both before the first measured round
        for r in range(1, args.rounds + 1):
            for c in args.concurrency:
                for side in ("taskrouter", "peer"):
                    if side == "taskrouter":
                        run = asyncio.run(ours(target, reqs, c, args.duration_s, args.channels))
                    else:
                        run = run_peer(c)
                    runs.setdefault((side, c), []).append(run)
                    print(run.row(f"round {r} {side} c={c}"), flush=True)
    finally:
        server.terminate()
        peer_proc.terminate()
        server.wait(30)
        peer_proc.wait(30)

    print(f"\nmedians over {args.rounds} rounds ({args.tokens}-token prompts, {args.duration_s:g} s each):")
    print("| load | taskrouter | peer | ratio |\n|---|---|---|---|")
    for c in args.concurrency:
        mine, theirs = runs[("taskrouter", c)], runs[("peer", c)]
        for label, value in (("p50 ms", lambda x: x.p(0.5)), ("p99 ms", lambda x: x.p(0.99))):
            a, b = statistics.median(map(value, mine)), statistics.median(map(value, theirs))
            print(f"| C={c} {label} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
        a = statistics.median(x.throughput for x in mine)
        b = statistics.median(x.throughput for x in theirs)
        print(f"| C={c} throughput | {a:.1f}/s | {b:.1f}/s | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
