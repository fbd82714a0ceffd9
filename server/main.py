"""Entry point: build_server(cfg) -> (server, port, app); serve(); health, reflection, graceful stop.

The port opens before the model loads so that orchestrators can watch grpc.health.v1 go from
NOT_SERVING to SERVING; classification answers UNAVAILABLE until then.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.app import SERVICE_NAME, App
from server.config import Config, load_config
from server.service import TaskRouterService
from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

GRACE_S = 5.0


async def build_server(cfg: Config) -> tuple[grpc.aio.Server, int, App]:
    """Create the server with every service registered and health NOT_SERVING; the caller starts it
    and then awaits `app.load()`."""
    app = App(cfg)
    limit = cfg.server.max_message_bytes
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    )
    pb_grpc.add_TaskRouterServicer_to_server(TaskRouterService(app), server)
    health_pb2_grpc.add_HealthServicer_to_server(app.health, server)
    reflection.enable_server_reflection(
        (
            pb.DESCRIPTOR.services_by_name["TaskRouter"].full_name,
            reflection.SERVICE_NAME,
            "grpc.health.v1.Health",
        ),
        server,
    )
    await app.set_serving(False)
    port = server.add_insecure_port(f"{cfg.server.host}:{cfg.server.port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {cfg.server.host}:{cfg.server.port}")
    return server, port, app


async def serve(cfg: Config) -> None:
    server, port, app = await build_server(cfg)
    await server.start()
    log.info("listening on %s:%d; loading the classifier", cfg.server.host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    load = asyncio.create_task(app.load())
    await asyncio.wait([load, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    failed = load.done() and load.exception() is not None
    if failed:
        log.error("start-up failed: %s", load.exception())
    elif load.done():
        log.info("%s SERVING on %s:%d", SERVICE_NAME, cfg.server.host, port)
        await stop.wait()
    else:
        load.cancel()  # stopped while still loading
    log.info("shutting down: NOT_SERVING, finishing in-flight requests (up to %.0fs)", GRACE_S)
    await app.set_serving(False)
    await server.stop(GRACE_S)
    await app.stop()
    if failed:
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    cfg = load_config(argv)
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(cfg))


if __name__ == "__main__":
    main()
