"""Evaluations that run as jobs: the console uploads a file, gets a job id at once, polls its progress
and may cancel it. A job classifies through the same path as serving (`classify_many` in
admission-sized slices), so it waits its turn behind live traffic instead of being refused or
starving it, and a cancelled job gives its queued prompts back (the batcher drops cancelled ones).

At most MAX_RUNNING jobs run at once (a third answers 429, retry later); the last KEEP jobs are kept
for their results, the oldest finished ones are forgotten first."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server.errors import NotFound, Overloaded

log = logging.getLogger(__name__)

MAX_RUNNING = 2
KEEP = 20
Progress = Callable[[int], None]


@dataclass
class Job:
    id: str
    total: int
    created: float = field(default_factory=time.time)
    done: int = 0
    state: str = "running"  # running, done, cancelled, failed
    result: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "result": self.result,
        }


class Jobs:
    def __init__(self, max_running: int = MAX_RUNNING, keep: int = KEEP) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._max_running = max_running
        self._keep = keep

    def start(self, total: int, run: Callable[[Progress], Awaitable[dict[str, Any]]]) -> Job:
        running = sum(j.state == "running" for j in self._jobs.values())
        if running >= self._max_running:
            raise Overloaded(
                f"{running} evaluations are running; at most {self._max_running}: retry when one ends"
            )
        job = Job(uuid.uuid4().hex, total)

        def progress(done: int) -> None:
            job.done = done

        async def body() -> None:
            try:
                job.result = await run(progress)
                job.done, job.state = job.total, "done"
            except asyncio.CancelledError:
                job.state = "cancelled"
            except Exception as exc:
                job.state, job.error = "failed", str(exc) or type(exc).__name__
                log.exception("evaluation job %s failed", job.id)

        job.task = asyncio.create_task(body(), name=f"evaluate-{job.id}")
        self._jobs[job.id] = job
        self._forget()
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no evaluation job {job_id!r} (jobs are kept until {self._keep} newer ones)")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state == "running" and job.task is not None:
            job.task.cancel()
            job.state = "cancelled"
        return job

    def _forget(self) -> None:
        for job_id in [i for i, j in self._jobs.items() if j.state != "running"][
            : max(0, len(self._jobs) - self._keep)
        ]:
            del self._jobs[job_id]
