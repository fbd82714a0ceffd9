"""CUDA graphs of the encoder, one per (batch, length) bucket: one replay instead of hundreds of kernel
launches. A 6-layer encoder at batch 1 is launch-bound on a GPU (each layer is a dozen small kernels,
more with experts), so a replay is what brings a lone request under a millisecond.

Inputs are padded up to the nearest bucket: extra positions get mask 0, extra rows one real token
(an all-masked row would be undefined, and is dropped anyway). All graphs share one memory pool;
replays run one at a time on the engine's single worker thread, and outputs are copied out before
the next replay, so sharing is safe. Shapes beyond the largest bucket run eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from models.classifier import TaskClassifier

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


def bucket(n: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket that holds `n`, or None past the largest."""
    return next((b for b in buckets if b >= n), None)


class GraphedEncoder:
    def __init__(
        self,
        classifier: TaskClassifier,
        device: torch.device,
        max_batch: int,
        max_length: int,
        pad_id: int,
    ) -> None:
        self.classifier = classifier
        self.device = device
        self.pad_id = pad_id
        self.batches = [b for b in BATCH_BUCKETS if b < max_batch] + [max_batch]
        self.lengths = [t for t in LENGTH_BUCKETS if t < max_length] + [max_length]
        self._graphs: dict[
            tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]
        ] = {}

    def capture(self) -> None:
        """Capture every bucket, largest first (the shared pool then never grows)."""
        pool = None
        stream = torch.cuda.Stream(self.device)
        with self.classifier.static_graph(), torch.inference_mode():
            for batch in reversed(self.batches):
                for length in reversed(self.lengths):
                    ids = torch.full((batch, length), self.pad_id, dtype=torch.long, device=self.device)
                    mask = torch.zeros_like(ids)
                    mask[:, 0] = 1
                    stream.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.stream(stream):  # warm-up runs outside the graph, as capture requires
                        for _ in range(2):
                            self.classifier.encoder(ids, mask)
                    torch.cuda.current_stream(self.device).wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        out = self.classifier.encoder(ids, mask)
                    pool = graph.pool()
                    self._graphs[(batch, length)] = (graph, ids, mask, out)
        torch.cuda.synchronize(self.device)
        log.info(
            "captured %d CUDA graphs (batch %s x length %s)", len(self._graphs), self.batches, self.lengths
        )

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Embeddings [B, D] from the graph of the nearest bucket, or None when no bucket fits.
        Inputs may be on the host (pinned) or the device."""
        rows, length = input_ids.shape
        batch, padded = bucket(rows, self.batches), bucket(length, self.lengths)
        if batch is None or padded is None or (batch, padded) not in self._graphs:
            return None
        graph, ids, mask, out = self._graphs[(batch, padded)]
        ids.fill_(self.pad_id)
        mask.zero_()
        mask[rows:, 0] = 1
        ids[:rows, :length].copy_(input_ids, non_blocking=True)
        mask[:rows, :length].copy_(attention_mask, non_blocking=True)
        graph.replay()
        return out[:rows].clone()
