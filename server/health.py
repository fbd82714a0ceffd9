"""What grpc.health.v1 says and why: SERVING only while the lifecycle wants it and the classifier is
answering. The stall watchdog turns a classifier that stopped answering into an alarm (health
NOT_SERVING and the stalled gauge at 1) until a batch completes again: without it a hung model thread
looks like a quiet service, and a broken one like a fast one.

The router store has its own service name, `taskrouter.v1.RouterStore`: NOT_SERVING while Redis cannot
be reached. The server itself stays SERVING on the last good set (a probe on "" must not pull a replica
that still classifies); alerts probe this name, or `taskrouter_router_store_up`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from grpc_health.v1 import health, health_pb2

from server.classify.batching import Batcher
from server.config import TelemetrySection
from server.telemetry import Telemetry

log = logging.getLogger(__name__)

SERVICE_NAME = "taskrouter.v1.TaskRouter"
STORE_SERVICE_NAME = "taskrouter.v1.RouterStore"


def _status(up: bool) -> int:
    return health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    def __init__(self, cfg: TelemetrySection, telemetry: Telemetry) -> None:
        self.cfg = cfg
        self.telemetry = telemetry
        self.servicer = health.aio.HealthServicer()  # registered with the gRPC server by server/main.py
        self.stalled = False
        self._serving = False  # what the lifecycle wants; SERVING also needs the classifier not stalled
        self._watchdog: asyncio.Task[None] | None = None
        self.store_up = True  # only a Redis store can be unreachable
        self._store_publish: asyncio.Task[None] | None = None

    async def set_serving(self, serving: bool) -> None:
        self._serving = serving
        await self._publish()

    async def _publish(self) -> None:
        status = _status(self._serving and not self.stalled)
        for name in ("", SERVICE_NAME):
            await self.servicer.set(name, status)
        await self._publish_store()

    async def _publish_store(self) -> None:
        await self.servicer.set(STORE_SERVICE_NAME, _status(self._serving and self.store_up))

    def set_store_up(self, up: bool) -> None:
        """The router store's reachability, from the store's own calls (sync: it reports from inside
        its operations; the health servicer is told on the event loop, when one runs)."""
        changed = up != self.store_up
        self.store_up = up
        self.telemetry.metrics.router_store_up.set(int(up))
        if not changed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # before the loop: _publish tells the servicer at SERVING
            return
        self._store_publish = loop.create_task(self._publish_store(), name="health-store")

    def watch(self, batcher: Batcher[Any, Any]) -> None:
        self._watchdog = asyncio.create_task(self._watch(batcher), name="watchdog")

    async def _watch(self, batcher: Batcher[Any, Any]) -> None:
        cfg = self.cfg
        gauge = self.telemetry.metrics.stalled
        shared = self.telemetry.shared
        while True:
            await asyncio.sleep(min(1.0, cfg.stall_after_s / 4))
            if shared is not None:  # the other workers' scrapes read this worker's latest numbers
                shared.publish()
            since = batcher.running_since
            running_s = time.perf_counter() - since if since is not None else 0.0
            failures = batcher.failed_in_a_row
            stalled = running_s > cfg.stall_after_s or failures >= cfg.stall_failed_batches
            if stalled == self.stalled:
                continue
            self.stalled = stalled
            gauge.set(int(stalled))
            if stalled:
                log.error(
                    "classifier stalled (batch running %.1fs, %d failed batches in a row): NOT_SERVING",
                    running_s,
                    failures,
                )
            else:
                log.warning("classifier answering again: SERVING")
            await self._publish()

    async def stop(self) -> None:
        await self.set_serving(False)
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
