"""The batcher on a plain-Python model: no timer when idle, caps, cancellation, error fan-out, admission."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from server.classify.admission import BatchCost, Work
from server.classify.batching import Batcher
from server.config import BatchingSection
from server.errors import InferenceFailed, NotReady, Overloaded


class SlowModel:
    """Doubles its inputs; each batch waits until the test releases it, and every batch is recorded."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        self.release.wait(5)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("boom")
        return [2 * x for x in items]


def run(test: Callable[..., Any], model: SlowModel, **caps: int) -> Any:
    cfg = BatchingSection(
        **{"max_batch_requests": 4, "max_batch_tokens": 1000, "max_queued_requests": 16, **caps}
    )

    async def main() -> Any:
        with ThreadPoolExecutor(1) as pool:
            batcher: Batcher[int, int] = Batcher(model, cfg, pool)
            batcher.start()
            try:
                return await test(batcher)
            finally:
                model.release.set()
                await batcher.close()

    return asyncio.run(main())


async def wait_started(model: SlowModel) -> None:
    while not model.started.is_set():
        await asyncio.sleep(0.001)


def test_lone_request_runs_at_once_and_the_next_batch_fills_meanwhile() -> None:
    model = SlowModel()

    async def scenario(batcher: Batcher[int, int]) -> None:
        first = asyncio.ensure_future(batcher.submit(1, 10))
        await wait_started(model)  # the lone request went straight to the model
        others = [asyncio.ensure_future(batcher.submit(x, 10)) for x in range(2, 8)]
        await asyncio.sleep(0.01)
        model.release.set()
        result, info = await first
        assert (result, info.size) == (2, 1)
        rest = await asyncio.gather(*others)
        assert [r for r, _ in rest] == [2 * x for x in range(2, 8)]  # each caller gets its own result
        assert [i.size for _, i in rest] == [4, 4, 4, 4, 2, 2]  # capped at max_batch_requests

    run(scenario, model)
    assert model.batches == [[1], [2, 3, 4, 5], [6, 7]]


def test_token_budget_caps_a_batch_but_never_starves_a_big_request() -> None:
    model = SlowModel()

    async def scenario(batcher: Batcher[int, int]) -> None:
        blocker = asyncio.ensure_future(batcher.submit(0, 1))
        await wait_started(model)
        sized = [(1, 60), (2, 60), (3, 200), (4, 10)]
        waiting = [asyncio.ensure_future(batcher.submit(x, n)) for x, n in sized]
        await asyncio.sleep(0.01)
        model.release.set()
        await asyncio.gather(blocker, *waiting)

    run(scenario, model, max_batch_tokens=150)
    assert model.batches == [[0], [1, 2], [3], [4]]


def test_cancelled_callers_are_dropped_before_the_model_sees_them() -> None:
    model = SlowModel()

    async def scenario(batcher: Batcher[int, int]) -> None:
        blocker = asyncio.ensure_future(batcher.submit(0, 1))
        await wait_started(model)
        gone = asyncio.ensure_future(batcher.submit(99, 1))
        kept = asyncio.ensure_future(batcher.submit(5, 1))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        model.release.set()
        assert (await kept)[0] == 10
        await blocker
        assert batcher.queued == 0

    run(scenario, model)
    assert 99 not in [x for batch in model.batches for x in batch]


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_runs() -> None:
    model = SlowModel(fail_on=3)

    async def scenario(batcher: Batcher[int, int]) -> None:
        blocker = asyncio.ensure_future(batcher.submit(0, 1))
        await wait_started(model)
        doomed = [asyncio.ensure_future(batcher.submit(x, 1)) for x in (2, 3, 4)]
        await asyncio.sleep(0.01)
        model.release.set()
        await blocker
        for future in doomed:
            with pytest.raises(InferenceFailed, match="batch of 3 requests: RuntimeError: boom"):
                await future
        assert (await batcher.submit(7, 1))[0] == 14

    run(scenario, model)


def test_admission_is_bounded_and_all_or_nothing() -> None:
    model = SlowModel()

    async def scenario(batcher: Batcher[int, int]) -> None:
        admitted = [asyncio.ensure_future(batcher.submit(x, 1)) for x in range(4)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="4 requests queued or running, limit 5"):
            await batcher.submit_many([10, 11], [1, 1])
        assert batcher.queued == 4  # the refused pair left nothing behind
        one_more = asyncio.ensure_future(batcher.submit(12, 1))  # 4 + 1 is within the bound of 5
        await asyncio.sleep(0.01)
        model.release.set()
        results = await asyncio.gather(*admitted, one_more)
        assert [r for r, _ in results] == [0, 2, 4, 6, 24]

    run(scenario, model, max_batch_requests=4, max_queued_requests=5)


def _measured(batcher: Batcher[int, int], ms_per_token: float) -> None:
    """As if earlier batches of 10 tokens had each run 10 x ms_per_token."""
    for i in range(5):
        batcher.cost.observe(10, 10 * ms_per_token, float(i), float(i) + 0.01)


def test_admission_by_expected_wait_counts_only_the_work_ahead() -> None:
    """At 20 ms per token and a 500 ms budget: behind a running batch of 20 tokens (400 ms) a request
    is admitted; behind that batch and one more queued request of 10 tokens (200 ms more), refused."""
    model = SlowModel()

    async def scenario(batcher: Batcher[int, int]) -> None:
        _measured(batcher, 20.0)
        running = [asyncio.ensure_future(batcher.submit(x, 10)) for x in range(2)]
        await wait_started(model)
        queued = asyncio.ensure_future(batcher.submit(2, 10))
        await asyncio.sleep(0)
        assert batcher.queued == 3
        with pytest.raises(
            Overloaded,
            match=r"expected wait \d+ ms for 3 requests \(30 tokens\) ahead exceeds .*max_queue_ms=500",
        ):
            await batcher.submit(3, 10)
        assert batcher.queued == 3  # the refusal left nothing behind
        model.release.set()
        assert [r for r, _ in await asyncio.gather(*running, queued)] == [0, 2, 4]
        # Learnt from the run: these batches were far cheaper than 20 ms per token.
        assert batcher.cost.batch_ms(10) < 200.0
        assert (await batcher.submit(3, 10))[0] == 6  # the queue drained: admitted again

    run(scenario, model, max_queue_ms=500)


def test_an_idle_server_admits_a_request_larger_than_the_budget() -> None:
    """The caller's own items never count: 64 long prompts at a measured 20 ms per token would take
    far longer than the 500 ms budget, and they run; a small request behind them is refused."""
    model = SlowModel()
    model.release.set()

    async def scenario(batcher: Batcher[int, int]) -> None:
        _measured(batcher, 20.0)
        model.release.clear()
        big = asyncio.ensure_future(batcher.submit_many(list(range(64)), [256] * 64))
        await wait_started(model)
        with pytest.raises(Overloaded, match="expected wait"):
            await batcher.submit(99, 5)
        model.release.set()
        assert [r for r, _ in await big] == [2 * x for x in range(64)]
        assert (await batcher.submit(99, 5))[0] == 198

    run(scenario, model, max_queue_ms=500, max_queued_requests=128)


def test_the_cost_model_separates_overhead_from_tokens_and_forgets_after_idle() -> None:
    cost = BatchCost()
    assert not cost.measured and cost.wait_ms(Work(0, 0), 64, 16384, 0.0) == 0.0
    for i, tokens in enumerate([10, 100, 1000, 50, 500] * 4):
        cost.observe(tokens, 5.0 + 0.1 * tokens, float(i), float(i) + 0.001)
    overhead, per_token = cost.coefficients()
    assert overhead == pytest.approx(5.0, abs=1e-6) and per_token == pytest.approx(0.1, abs=1e-9)
    # 130 requests of 100 tokens form 3 batches of at most 64: 3 overheads plus 13000 tokens.
    assert cost.wait_ms(Work(130, 13000), 64, 16384, 20.0) == pytest.approx(20 + 3 * 5 + 1300)
    # Nothing ahead: the wait is what is left of the running batch, never less than 0.
    assert cost.wait_ms(Work(0, 0), 64, 16384, -3.0) == 0.0
    # After a minute idle, two batches on a now 10x cheaper machine outweigh all the history.
    cost.observe(100, 1.5, 80.0, 80.001)
    cost.observe(1000, 10.5, 80.01, 80.011)
    assert cost.batch_ms(1000) < 0.5 * (5.0 + 100.0)


def test_closed_batcher_refuses_new_work() -> None:
    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher: Batcher[int, int] = Batcher(lambda xs: xs, BatchingSection(), pool)
            with pytest.raises(NotReady):
                await batcher.submit(1, 1)  # never started
            batcher.start()
            assert (await batcher.submit(1, 1))[0] == 1
            await batcher.close()
            with pytest.raises(NotReady, match="shutting down"):
                await batcher.submit(1, 1)

    asyncio.run(scenario())
