"""The Locust file works: a short headless run against the real server reports Classify and Route
with no failures (the real load runs are benchmarks, outside the suite). Locust runs in its own
process: importing it monkey-patches the standard library for gevent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from loadtests.precision import bucket_response_time
from tests.conftest import ServerThread

ROOT = Path(__file__).resolve().parents[2]


def test_buckets_keep_sub_millisecond_precision() -> None:
    assert [bucket_response_time(v) for v in (0.3471, 1.2345, 12.345, 147.4, 3432.0)] == [
        0.347,
        1.23,
        12.3,
        147.0,
        3430.0,
    ]


def test_headless_run_reports_classify_and_route(served: ServerThread) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless", "-u", "2", "-r", "2"]
        + ["-t", "3s", "--host", f"127.0.0.1:{served.port}", "--only-summary", "--stop-timeout", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = dict(re.findall(r"^(Classify|Route)\s+(\d+\s+\d+)", run.stdout, re.M))
    assert set(rows) == {"Classify", "Route"}, run.stdout
    for name, cells in rows.items():
        requests, failures = map(int, cells.split())
        assert requests > 0 and failures == 0, (name, run.stdout)
