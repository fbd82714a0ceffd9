"""Shared fixtures: the real service from build_server(cfg), gRPC and HTTP on 127.0.0.1, free ports."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from server.config import Config, load_config
from server.main import build_server
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc
from tests.fake_openai import KEY_ENV, FakeOpenAI, write_demo_config

DATA = Path(__file__).resolve().parent / "data"
# How far a prompt's int8 scores may move with its batch mates: activations are quantised per token
# (models/onnx_export.py), so only float rounding of the padded attention is left, which can tip a value
# across a quantisation step now and then (the largest move seen was under 1e-4).
INT8_BATCH_MATES_TOLERANCE = 2e-3
ROOT = DATA.parents[1]


@dataclass
class Spawned:
    """`python -m server.main` in its own process, as an operator runs it."""

    proc: subprocess.Popen[str]
    ready: re.Match[str]  # the log line that said it was ready
    log: list[str]  # every line so far; `drain` keeps appending until the process ends
    drain: threading.Thread


def spawn_server(args: list[str], ready: str, env: dict[str, str] | None = None) -> Spawned:
    """Start the entry point with `args` (and extra environment `env`); return once a log line
    matches the regex `ready`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.main", *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    assert proc.stderr is not None
    log: list[str] = []
    for line in proc.stderr:
        log.append(line)
        if found := re.search(ready, line):
            # Keep reading, so a full pipe never stalls the server and the test sees every line.
            drain = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
            drain.start()
            return Spawned(proc, found, log, drain)
    raise AssertionError(f"the server exited before {ready!r}:\n" + "".join(log[-20:]))


class ServerThread:
    """Runs the asyncio gRPC server on its own loop in a thread, so tests can use blocking stubs."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.service = self.call(build_server(cfg))
        self.port, self.http_port = self.service.port, self.service.http_port
        self.runtime = self.service.runtime
        self.call(self.service.start())
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self.stub = pb_grpc.TaskRouterStub(self.channel)
        self._stopped = False

    def call(self, coro: Any, timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def load(self) -> ServerThread:
        self.call(self.runtime.load())
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.channel.close()
        self.call(self.service.stop(1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def free_port() -> int:
    """A loopback port nobody listens on (also what tests use as a refused connection)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeClock:
    """A settable monotonic clock for time-dependent units (TTLs, back-offs)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_config(**sections: Any) -> Config:
    """Config for a test server: a free port on loopback, plus any section overrides."""
    server = {"host": "127.0.0.1", "port": 0, **sections.pop("server", {})}
    http = {"host": "127.0.0.1", "port": 0, **sections.pop("http", {})}
    return load_config([], server=server, http=http, **sections)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    """A real OpenAI-protocol server on loopback (tests/fake_openai.py), one per test module."""
    server = FakeOpenAI().start()
    yield server
    server.stop()


def demo_service(fake: FakeOpenAI, root: Path, **sections: Any) -> ServerThread:
    """A loaded server whose catalogue's models live on `fake` (router `demo`, see write_demo_config),
    with any config section overrides."""
    routers, catalog = write_demo_config(root, fake, free_port())
    os.environ[KEY_ENV] = "sk-test-123"
    return ServerThread(make_config(routers={"dir": routers, "catalog": catalog}, **sections)).load()


@pytest.fixture(scope="session")
def served() -> Iterator[ServerThread]:
    """One loaded server with the shipped checkpoint and routers, shared by the integration tests.

    Admission by expected wait is off here: its verdict on a burst depends on how fast this machine
    is today, and these tests check answers, not timing (tests/unit/test_batching.py checks it)."""
    thread = ServerThread(make_config(batching={"max_queue_ms": 0})).load()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def stub(served: ServerThread) -> pb_grpc.TaskRouterStub:
    return served.stub


@pytest.fixture(scope="session")
def router_prompts() -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load((DATA / "default_router_prompts.yaml").read_text())
