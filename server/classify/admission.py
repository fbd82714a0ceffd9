"""How long will work already admitted keep the model busy? The batcher's admission-by-wait asks this.

A batch costs a fixed overhead plus a share per token (batch_ms ~ overhead + per_token x tokens):
counting requests alone, as before, priced a 512-row ClassifyBatch of long prompts as 512 short ones
and refused it on an idle server, and an estimate learnt from long prompts then refused small requests
long after the burst. So:

- the model is fitted online (least squares over exponentially forgotten batch statistics), so it
  follows the machine as its load changes;
- only work *ahead* counts (queued tokens, in the batches they will form, plus what is left of the
  running batch), never the caller's own items: an idle server admits anything;
- the statistics are forgotten faster after an idle gap (half their weight per `_IDLE_HALF_LIFE_S`),
  so batches measured on a busier machine stop deciding once it has quietened down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Weight each new batch's statistics replace (an exponential moving average over ~5 batches).
_RATE = 0.2
_IDLE_HALF_LIFE_S = 10.0


@dataclass(frozen=True)
class Work:
    """Work that waits ahead of a new request."""

    requests: int
    tokens: int


class BatchCost:
    """Online fit of one batch's inference time: overhead_ms + per_token_ms x tokens."""

    def __init__(self) -> None:
        # Exponentially weighted sums over recent batches: weight, tokens, tokens^2, ms, tokens x ms.
        self._w = self._t = self._tt = self._y = self._ty = 0.0
        self._last_end: float | None = None

    @property
    def measured(self) -> bool:
        return self._w > 0

    def observe(self, tokens: int, ms: float, started: float, finished: float) -> None:
        """Record a batch of `tokens` that ran `ms`, from `started` to `finished` (seconds)."""
        keep = 1.0 - _RATE
        if self._last_end is not None and started > self._last_end:
            keep *= 0.5 ** ((started - self._last_end) / _IDLE_HALF_LIFE_S)
        self._last_end = finished
        t = float(max(tokens, 1))
        self._w = keep * self._w + _RATE
        self._t = keep * self._t + _RATE * t
        self._tt = keep * self._tt + _RATE * t * t
        self._y = keep * self._y + _RATE * ms
        self._ty = keep * self._ty + _RATE * t * ms

    def coefficients(self) -> tuple[float, float]:
        """(overhead_ms, per_token_ms), both >= 0; (0, 0) before any batch."""
        if self._w <= 0:
            return 0.0, 0.0
        mean_t, mean_y = self._t / self._w, self._y / self._w
        var_t = self._tt / self._w - mean_t * mean_t
        if var_t > 1e-6 * max(mean_t * mean_t, 1.0):
            slope = (self._ty / self._w - mean_t * mean_y) / var_t
            if slope >= 0:
                intercept = mean_y - slope * mean_t
                if intercept >= 0:
                    return intercept, slope
                return 0.0, mean_y / mean_t  # through the origin rather than a negative overhead
        # Batches of one size only (or a fit that says larger is faster): all of it is per token,
        # the cautious reading for the larger work it will be asked about.
        return 0.0, mean_y / mean_t

    def batch_ms(self, tokens: int) -> float:
        overhead, per_token = self.coefficients()
        return overhead + per_token * tokens

    def wait_ms(self, ahead: Work, batch_requests: int, batch_tokens: int, running_left_ms: float) -> float:
        """Expected wait behind `ahead` (queued, not yet running) and a running batch with
        `running_left_ms` still to go, when batches hold at most `batch_requests` / `batch_tokens`."""
        if ahead.requests == 0:
            return max(running_left_ms, 0.0)
        overhead, per_token = self.coefficients()
        batches = max(math.ceil(ahead.requests / batch_requests), math.ceil(ahead.tokens / batch_tokens), 1)
        return max(running_left_ms, 0.0) + batches * overhead + per_token * ahead.tokens
