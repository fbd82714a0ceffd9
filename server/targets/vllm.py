"""Launched vLLM replicas: the service starts `vllm serve` for each configured local model, restarts
one that dies, and stops them all (SIGTERM, then SIGKILL) on shutdown. The command is configurable
because vLLM usually lives in its own virtual environment (it pins its own transformers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from server.targets.catalog import LaunchSpec, VllmPoolSpec

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 5.0, 30.0)
STOP_GRACE_S = 20.0


def serve_command(prefix: Sequence[str], model_flag: str | None, spec: LaunchSpec) -> list[str]:
    model = [model_flag, spec.model] if model_flag else [spec.model]
    command = [*prefix, *model, "--host", "127.0.0.1", "--port", str(spec.port)]
    if spec.served_model_name:
        command += ["--served-model-name", spec.served_model_name]
    return command + list(spec.args)


class Replica:
    """One `vllm serve` process and the task that keeps it running."""

    def __init__(self, pool: str, pool_spec: VllmPoolSpec, spec: LaunchSpec) -> None:
        self.pool = pool
        self.spec = spec
        self.command = serve_command(pool_spec.command, pool_spec.model_flag, spec)
        env = pool_spec.env
        self._env = {**os.environ, **env}
        self.log_path = Path(tempfile.gettempdir()) / f"taskrouter-vllm-{pool}-{spec.port}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    async def _spawn(self) -> None:
        with self.log_path.open("ab") as out:
            # Its own process group, so stopping it also stops the engine workers it forks.
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdout=out, stderr=out, env=self._env, start_new_session=True
            )
        log.info(
            "pool %s: started %s (pid %d, log %s)",
            self.pool,
            " ".join(self.command),
            self.process.pid,
            self.log_path,
        )

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            log.error(
                "pool %s: vLLM on port %d exited with %s; restarting in %.0fs (log %s)",
                self.pool,
                self.spec.port,
                code,
                delay,
                self.log_path,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts += 1
            await self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except ProcessLookupError:
                pass
            except TimeoutError:
                log.warning("pool %s: vLLM on port %d ignored SIGTERM; killing it", self.pool, self.spec.port)
        # Whatever it forked (engine core, resource tracker) may outlive it: the group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
