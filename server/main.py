"""Entry point: build_server(cfg) -> Service (gRPC server, HTTP server, runtime); serve(); health,
reflection, graceful stop.

The ports open before the model loads so that orchestrators can watch grpc.health.v1 go from
NOT_SERVING to SERVING; classification answers UNAVAILABLE until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc
import uvicorn
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.auth import Auth, GrpcAuth
from server.config import Config, load_config
from server.health import SERVICE_NAME
from server.http.api import build_http_app
from server.http.connections import guarded_h11
from server.rpc.servicer import Servicer, add_to_server
from server.runtime import Runtime
from server.workers import run_workers
from taskrouter.v1 import taskrouter_pb2 as pb

log = logging.getLogger(__name__)

GRACE_S = 5.0


@dataclass
class Service:
    runtime: Runtime
    grpc_server: grpc.aio.Server
    port: int
    http_port: int | None  # None when HTTP is off
    http_server: uvicorn.Server | None = None
    http_socket: socket.socket | None = None  # bound by build_server, so that port 0 resolves early
    _http_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.grpc_server.start()
        if self.http_server is not None:
            self._http_task = asyncio.create_task(self.http_server.serve(sockets=[self.http_socket]))

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING, stop taking requests, let in-flight ones finish (up to grace_s), release all."""
        await self.runtime.health.set_serving(False)
        if self.http_server is not None and self._http_task is not None:
            self.http_server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._http_task
        await self.grpc_server.stop(grace_s)
        await self.runtime.stop()


class _HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn would take SIGTERM/SIGINT for itself; here `serve()` owns them, so that a stop
        turns health NOT_SERVING first and drains gRPC and HTTP together."""
        yield


def _http_server(
    cfg: Config, runtime: Runtime, auth: Auth | None
) -> tuple[uvicorn.Server, socket.socket, int]:
    # The socket is bound here, not by uvicorn, so that port 0 resolves before serving starts.
    sock = socket.create_server((cfg.http.host, cfg.http.port or 0), reuse_port=cfg.server.workers > 1)
    # Accepted connections inherit this. asyncio only sets it itself on sockets created with
    # proto=IPPROTO_TCP; without it, Nagle holds each response's body behind its headers until the
    # client's delayed ACK: +40 ms on every keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = uvicorn.Config(
        build_http_app(runtime, auth),
        http=guarded_h11(cfg.http.header_timeout_s, cfg.http.max_connections),
        timeout_keep_alive=cfg.http.keep_alive_s,
        ssl_certfile=cfg.tls.cert_file,
        ssl_keyfile=cfg.tls.key_file,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return _HttpServer(config), sock, sock.getsockname()[1]


async def build_server(cfg: Config) -> Service:
    """Create the servers with every service registered and health NOT_SERVING; the caller starts
    them (`Service.start`) and then awaits `runtime.load()`."""
    runtime = Runtime(cfg)
    limit = cfg.server.max_message_bytes
    # Only when a token is configured: an open server pays nothing for the check.
    auth = Auth(cfg.auth) if cfg.auth.admin_token_env or cfg.auth.inference_token_env else None
    server = grpc.aio.server(
        interceptors=[GrpcAuth(auth)] if auth is not None else None,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # gRPC sets SO_REUSEPORT by default, which lets a second server on the same port take half
            # the connections silently; only worker processes (server/workers.py) share a port.
            ("grpc.so_reuseport", int(cfg.server.workers > 1)),
        ],
    )
    add_to_server(Servicer(runtime), server)
    health_pb2_grpc.add_HealthServicer_to_server(runtime.health.servicer, server)
    reflection.enable_server_reflection(
        (
            pb.DESCRIPTOR.services_by_name["TaskRouter"].full_name,
            reflection.SERVICE_NAME,
            "grpc.health.v1.Health",
        ),
        server,
    )
    await runtime.health.set_serving(False)
    address = f"{cfg.server.host}:{cfg.server.port}"
    if cfg.tls.cert_file is not None and cfg.tls.key_file is not None:
        pair = (cfg.tls.key_file.read_bytes(), cfg.tls.cert_file.read_bytes())
        port = server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {cfg.server.host}:{cfg.server.port}")
    if cfg.http.port is None:
        return Service(runtime, server, port, None)
    http, http_socket, http_port = _http_server(cfg, runtime, auth)
    return Service(runtime, server, port, http_port, http, http_socket)


async def serve(cfg: Config, on_serving: Callable[[], None] | None = None) -> None:
    service = await build_server(cfg)
    await service.start()
    runtime = service.runtime
    log.info(
        "listening on %s:%d (gRPC)%s; loading the classifier",
        cfg.server.host,
        service.port,
        f" and {cfg.http.host}:{service.http_port} (HTTP)" if service.http_port else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    load = asyncio.create_task(runtime.load())
    await asyncio.wait([load, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    failed = load.done() and load.exception() is not None
    if failed:
        log.error("start-up failed: %s", load.exception())
    elif load.done():
        log.info("%s SERVING on %s:%d", SERVICE_NAME, cfg.server.host, service.port)
        if on_serving is not None:
            on_serving()
        await stop.wait()
    else:
        load.cancel()  # stopped while still loading
    log.info("shutting down: NOT_SERVING, finishing in-flight requests (up to %.0fs)", GRACE_S)
    await service.stop(GRACE_S)
    if failed:
        raise SystemExit(1)


def _serve_blocking(cfg: Config, on_serving: Callable[[], None] | None) -> None:
    asyncio.run(serve(cfg, on_serving))


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    # httpx logs every request at INFO: the endpoint health probes alone were 98% of the log. Failed
    # probes still show, as this service's own warnings (server/targets).
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    cfg = load_config(argv)
    configure_logging(cfg.log_level)
    if cfg.server.workers > 1:
        raise SystemExit(run_workers(cfg, _serve_blocking))
    _serve_blocking(cfg, None)


if __name__ == "__main__":
    main()
