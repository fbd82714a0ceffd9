"""What recording one request costs (metrics + request log), off the server: a Route-like record
filled and finished N times. Prints the p50/p99 per record in microseconds.

    python -m loadtests.bench_telemetry [--n 20000] [--no-log]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from models import ChatMessage
from server.config import TelemetrySection
from server.telemetry import Telemetry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--no-log", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = None if args.no_log else Path(tmp) / "requests.jsonl"
        telemetry = Telemetry(TelemetrySection(request_log=log))
        times = []
        for i in range(args.n):
            started = time.perf_counter()
            with telemetry.request("Route") as record:
                record.messages = [ChatMessage("user", "hello")]
                record.router, record.task, record.matched, record.confidence = (
                    "support",
                    f"t{i % 5}",
                    True,
                    0.9,
                )
                record.input_tokens, record.tokenize_ms, record.queue_ms, record.inference_ms = (
                    32,
                    0.3,
                    0.1,
                    5.0,
                )
                record.batch_size, record.candidates, record.policy, record.model = (
                    4,
                    ("a", "b"),
                    "cheapest",
                    "a",
                )
                record.prompt_tokens, record.completion_tokens, record.cost_usd = 40, 256, 1e-5
            times.append(time.perf_counter() - started)
        telemetry.close()
    us = np.array(times) * 1e6
    print(
        f"{'metrics only' if args.no_log else 'metrics + request log'}: n={args.n} "
        f"p50 {np.percentile(us, 50):.1f} us, p99 {np.percentile(us, 99):.1f} us, "
        f"{args.n / sum(times):,.0f} records/s"
    )


if __name__ == "__main__":
    main()
