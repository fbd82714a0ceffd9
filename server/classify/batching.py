"""The dynamic batcher (text-embeddings-inference's design). asyncio only; knows no torch.

- No timer when idle: a lone request goes straight to the model; while the model runs, the next
  batch fills up from whatever arrives meanwhile.
- A batch is capped by a request count and a token budget; callers that have gone are dropped
  before their request costs anything.
- Admission is bounded: past `max_queued_requests` waiting or running, or when the expected wait
  for the work ahead (server/classify/admission.py: queued tokens and batches, plus what is left of the
  running batch, at the recently measured cost) passes `max_queue_ms`, `submit` raises Overloaded
  at once instead of growing the queue. The caller's own items never count, so an idle server
  admits any request, however large.
- The model runs off the event loop on one worker thread; results go back to each caller by index,
  and a failed batch fails each of its callers with the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from server.classify.admission import BatchCost, Work
from server.config import BatchingSection
from server.errors import InferenceFailed, NotReady, Overloaded, TaskRouterError

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class BatchInfo:
    size: int
    queue_ms: float
    inference_ms: float


class BatchObserver(Protocol):
    """Told about every batch and every refusal (server/telemetry.py turns them into metrics)."""

    def batch(self, size: int, seconds: float, failed: bool) -> None: ...

    def rejected(self, reason: str) -> None: ...


@dataclass
class _Pending(Generic[In]):
    item: In
    tokens: int
    future: asyncio.Future[Any]
    enqueued: float


class Batcher(Generic[In, Out]):
    """Collects submitted items into batches for `run_batch(items) -> results` (same order)."""

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out]],
        cfg: BatchingSection,
        executor: Executor,
        observer: BatchObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._observer = observer
        self._cfg = cfg
        self._executor = executor
        self._queue: deque[_Pending[In]] = deque()
        self._wakeup = asyncio.Event()
        self._in_flight = 0  # admitted and not yet answered: queued + running
        self._queued_tokens = 0  # tokens of the items in _queue
        self._running_tokens = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # What recent batches cost (overhead + per token): prices the work ahead of a newcomer.
        self.cost = BatchCost()
        # For the stall watchdog: when the running batch started (None when idle), and how many
        # batches in a row have failed.
        self.running_since: float | None = None
        self.failed_in_a_row = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def close(self) -> None:
        """Refuse new work, let queued work finish, then stop the loop."""
        self._closed = True
        while self._queue or self._in_flight:
            self._wakeup.set()
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def queued(self) -> int:
        return self._in_flight

    async def submit(self, item: In, tokens: int) -> tuple[Out, BatchInfo]:
        return (await self.submit_many([item], [tokens]))[0]

    async def submit_many(self, items: Sequence[In], tokens: Sequence[int]) -> list[tuple[Out, BatchInfo]]:
        """Admit all of `items` or none of them, then wait for every result."""
        if self._closed or self._task is None:
            raise NotReady(
                "the classifier is not accepting requests (starting or shutting down); retry later"
            )
        limit = self._cfg.max_queued_requests
        if self._in_flight + len(items) > limit:
            self._reject("queue_full")
            raise Overloaded(
                f"server is at capacity ({self._in_flight} requests queued or running, limit {limit}); "
                f"retry with backoff"
            )
        budget = self._cfg.max_queue_ms
        now = time.perf_counter()
        if budget and self.cost.measured:
            expected = self.expected_wait_ms(now)
            if expected > budget:
                self._reject("expected_wait")
                raise Overloaded(
                    f"server is at capacity: expected wait {expected:.0f} ms for {self._in_flight} requests "
                    f"({self._queued_tokens + self._running_tokens} tokens) ahead exceeds "
                    f"batching.max_queue_ms={budget:g}; retry with backoff"
                )
        loop = asyncio.get_running_loop()
        pending = [
            _Pending(item, n, loop.create_future(), now) for item, n in zip(items, tokens, strict=True)
        ]
        self._in_flight += len(pending)
        self._queued_tokens += sum(p.tokens for p in pending)
        self._queue.extend(pending)
        self._wakeup.set()
        try:
            return await asyncio.gather(*(p.future for p in pending))
        finally:
            for p in pending:
                if not p.future.done():  # our caller went away: let the loop drop the rest
                    p.future.cancel()

    def expected_wait_ms(self, now: float) -> float:
        """How long a request arriving `now` would wait before its own batch starts."""
        running_left = 0.0
        if self.running_since is not None:
            running_left = self.cost.batch_ms(self._running_tokens) - (now - self.running_since) * 1e3
        ahead = Work(len(self._queue), self._queued_tokens)
        return self.cost.wait_ms(
            ahead, self._cfg.max_batch_requests, self._cfg.max_batch_tokens, running_left
        )

    def _reject(self, reason: str) -> None:
        if self._observer is not None:
            self._observer.rejected(reason)

    def _take_batch(self) -> list[_Pending[In]]:
        batch: list[_Pending[In]] = []
        tokens = 0
        while self._queue and len(batch) < self._cfg.max_batch_requests:
            head = self._queue[0]
            if head.future.done():  # cancelled caller: drop it before it costs anything
                self._queue.popleft()
                self._in_flight -= 1
                self._queued_tokens -= head.tokens
                continue
            if batch and tokens + head.tokens > self._cfg.max_batch_tokens:
                break
            batch.append(self._queue.popleft())
            tokens += head.tokens
        self._queued_tokens -= tokens
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._take_batch()
            if not batch:
                continue
            self._running_tokens = sum(p.tokens for p in batch)
            started = self.running_since = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
                error: TaskRouterError | None = None
            except Exception as exc:  # fanned out to every caller below, not swallowed
                log.exception("batch of %d failed", len(batch))
                error = InferenceFailed(
                    f"classification failed for a batch of {len(batch)} requests: {type(exc).__name__}: {exc}"
                )
                results = []
            finished = time.perf_counter()
            self.running_since = None
            self.failed_in_a_row = 0 if error is None else self.failed_in_a_row + 1
            if self._observer is not None:
                self._observer.batch(len(batch), finished - started, error is not None)
            if error is None:
                self.cost.observe(self._running_tokens, (finished - started) * 1e3, started, finished)
            self._running_tokens = 0
            for i, pending in enumerate(batch):
                self._in_flight -= 1
                if pending.future.done():
                    continue
                if error is not None:
                    pending.future.set_exception(error)
                    continue
                info = BatchInfo(
                    size=len(batch),
                    queue_ms=(started - pending.enqueued) * 1e3,
                    inference_ms=(finished - started) * 1e3,
                )
                pending.future.set_result((results[i], info))
