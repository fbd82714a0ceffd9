"""Several worker processes on one port (server/workers.py): the real entry point with --workers 2."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc
from tests.conftest import spawn_server


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_two_workers_share_the_port_and_stop_together() -> None:
    server = spawn_server(
        ["--workers", "2", "--port", "0", "--http-port", "0"], r"2 workers SERVING on ([\d.]+:\d+)"
    )
    proc, lines, target = server.proc, server.log, server.ready.group(1)
    try:
        workers = [
            int(m.group(1)) for line in lines if (m := re.search(r"worker \d+ \(pid (\d+)\) starting", line))
        ]
        assert len(workers) == 2, "".join(lines[-20:])

        before = {pid: cpu_seconds(pid) for pid in workers}

        def calls(i: int) -> list[str]:
            # A channel of its own per caller: the kernel spreads connections, not requests.
            with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = pb_grpc.TaskRouterStub(channel)
                return [
                    stub.Classify(pb.ClassifyRequest(router="support", prompt=f"refund order {i}-{k}")).task
                    for k in range(15)
                ]

        with ThreadPoolExecutor(16) as pool:
            answers = [task for result in pool.map(calls, range(16)) for task in result]
        assert len(answers) == 240 and all(answers)
        spent = {pid: cpu_seconds(pid) - before[pid] for pid in workers}
        assert all(s > 0.1 for s in spent.values()), spent  # both workers classified a share

        # Any worker's /metrics answers for both: each series labelled with its worker's pid, and the
        # labelled counts add up to every request sent (the other worker's file is at most ~1 s old).
        http_port = next(int(m.group(1)) for line in lines if (m := re.search(r":(\d+) \(HTTP\)", line)))
        time.sleep(1.5)
        for _ in range(4):  # several connections: whichever worker takes one answers for both
            text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
            ok: dict[str, float] = {}  # per worker, summed over its series (tasks differ by prompt)
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "taskrouter_requests_total" and sample.labels["outcome"] == "OK":
                        worker = sample.labels["worker"]
                        ok[worker] = ok.get(worker, 0.0) + sample.value
            assert set(ok) == {str(pid) for pid in workers} and sum(ok.values()) == 240, ok

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines[-20:])
        time.sleep(0.2)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
