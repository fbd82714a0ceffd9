"""Several server processes on one port: the parent reserves the ports, forks the workers before any
gRPC object or thread exists, forwards stop signals and exits when they have.

Why: one Python process runs the event loop, protobuf work and tokenisation on one core; where the
model leaves cores idle (CPU serving on a many-core host, or a GPU fed by one loop), more processes
keep them busy. Every worker binds the same ports with SO_REUSEPORT and the kernel spreads incoming
connections across them (by connection, not by request: a client with one channel talks to one
worker). Each worker loads its own model and batches its own requests.

The workers serve one router set: they share the router state file (server/routing/persistence.py), a
temporary one when `routers.state_file` is unset (API changes then last until the server stops, as
with one process), so a router made through any worker's connection is served by all within a second.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from multiprocessing.synchronize import Semaphore
from pathlib import Path

from server.config import Config

log = logging.getLogger(__name__)

Serve = Callable[[Config, Callable[[], None] | None], None]


def _reserve(host: str, port: int) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket: fixes a port-0 request to one concrete port that
    every worker then binds too (connections only ever go to listening sockets)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(serve: Serve, cfg: Config, index: int, ready: Semaphore) -> None:
    log.info("worker %d (pid %d) starting", index, os.getpid())
    serve(cfg, ready.release)


def run_workers(cfg: Config, serve: Serve) -> int:
    """Run `cfg.server.workers` processes of `serve`; the exit status is 0 when all stopped cleanly."""
    count = cfg.server.workers
    reserved = [_reserve(cfg.server.host, cfg.server.port)]
    ports = {"server": {"port": reserved[0].getsockname()[1]}}
    if cfg.http.port is not None:
        reserved.append(_reserve(cfg.http.host, cfg.http.port))
        ports["http"] = {"port": reserved[1].getsockname()[1]}
    threads = cfg.model.threads or max(1, (os.cpu_count() or 1) // count)
    # Where the workers leave their metrics for each other's scrapes (server/telemetry/shared_metrics.py).
    metrics_dir = cfg.telemetry.metrics_dir or Path(tempfile.mkdtemp(prefix="taskrouter-metrics-"))
    # Where they share the router set when no state file was asked for.
    routers_dir = None if cfg.routers.state_file else Path(tempfile.mkdtemp(prefix="taskrouter-routers-"))
    state_file = cfg.routers.state_file or routers_dir / "routers.json"  # type: ignore[operator]
    worker_cfg = cfg.model_copy(
        update={
            "server": cfg.server.model_copy(update=ports["server"]),
            "http": cfg.http.model_copy(update=ports.get("http", {})),
            "model": cfg.model.model_copy(update={"threads": threads}),
            "telemetry": cfg.telemetry.model_copy(update={"metrics_dir": metrics_dir}),
            "routers": cfg.routers.model_copy(update={"state_file": state_file}),
        }
    )
    ctx = multiprocessing.get_context("fork")  # nothing in this process has started a thread yet
    ready = ctx.Semaphore(0)
    procs = [
        ctx.Process(target=_worker, args=(serve, worker_cfg, i, ready), name=f"worker-{i}")
        for i in range(count)
    ]
    for proc in procs:
        proc.start()
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serving = 0
    status = 0
    while any(p.is_alive() for p in procs):
        multiprocessing.connection.wait([p.sentinel for p in procs], timeout=0.2)
        while serving < count and ready.acquire(block=False):
            serving += 1
            if serving == count:
                log.info("%d workers SERVING on %s:%d", count, cfg.server.host, ports["server"]["port"])
        failed = [p for p in procs if p.exitcode not in (None, 0)]
        if failed and not stopping:
            log.error("worker %s exited with %s; stopping the others", failed[0].name, failed[0].exitcode)
            status = 1
            stop(signal.SIGTERM, None)
    for sock in reserved:
        sock.close()
    if cfg.telemetry.metrics_dir is None:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if routers_dir is not None:
        shutil.rmtree(routers_dir, ignore_errors=True)
    return status or int(any(p.exitcode != 0 for p in procs))
