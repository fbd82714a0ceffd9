"""TaskVectors: what one router's prompts are scored against.

Every task has a prototype (its description, mixed with its examples' mean when it has some;
models/nomatch.mix_prototypes). A checkpoint retrained on one taxonomy may also hold that taxonomy's
labelled prompts as *learned examples* (`TaskClassifier.learned_examples`): for such a task the score
is `(1 - w) x cos(prompt, prototype) + w x max cos(prompt, learned example)`, w being the checkpoint's
`nearest_example_weight`. A task is not one point: "card arrival" covers "where is my card?" and "can
I track the delivery?", which sit apart, and the nearest labelled prompt catches the mode a single
vector misses (measured in training/README.md, "Retraining on one taxonomy").

Rows are scored independently (no statistic of the batch), so a prompt's scores never depend on its
batch mates. Tasks without learned examples read exactly as the prototype alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TaskVectors:
    prototypes: torch.Tensor  # [T, D], unit norm
    neighbours: torch.Tensor | None = None  # [E, D] learned examples, unit norm
    owner: torch.Tensor | None = None  # [E] index of each learned example's task
    weight: float = 0.0  # share of the nearest learned example in a task's score

    @classmethod
    def build(
        cls, prototypes: torch.Tensor, learned: Sequence[torch.Tensor | None], weight: float
    ) -> TaskVectors:
        """Prototypes [T, D] plus, per task, its learned examples [n_t, D] or None."""
        if len(learned) != len(prototypes):
            raise ValueError(f"{len(learned)} learned-example entries for {len(prototypes)} tasks")
        rows = [(t, e) for t, e in enumerate(learned) if e is not None and len(e)]
        if not rows or weight == 0.0:
            return cls(prototypes)
        neighbours = torch.cat([e for _, e in rows]).to(device=prototypes.device, dtype=prototypes.dtype)
        owner = torch.cat([torch.full((len(e),), t, dtype=torch.long) for t, e in rows])
        return cls(prototypes, neighbours, owner.to(prototypes.device), weight)

    def __len__(self) -> int:
        return int(self.prototypes.shape[0])

    @property
    def has_neighbours(self) -> bool:
        return self.neighbours is not None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskVectors:
        dtype = dtype or self.prototypes.dtype
        if self.neighbours is None or self.owner is None:
            return TaskVectors(self.prototypes.to(device=device, dtype=dtype))
        return TaskVectors(
            self.prototypes.to(device=device, dtype=dtype),
            self.neighbours.to(device=device, dtype=dtype),
            self.owner.to(device),
            self.weight,
        )

    def similarity(self, prompts: torch.Tensor) -> torch.Tensor:
        """Scores [B, T] of unit-norm prompt embeddings [B, D]."""
        sims = prompts @ self.prototypes.T
        if self.neighbours is None or self.owner is None:
            return sims
        near = prompts @ self.neighbours.T  # [B, E]
        best = torch.full_like(sims, float("-inf")).scatter_reduce(
            1, self.owner.expand(len(prompts), -1), near, reduce="amax", include_self=True
        )
        has = torch.isfinite(best)
        return torch.where(has, (1.0 - self.weight) * sims + self.weight * best, sims)

    def similarity_np(self, prompts: np.ndarray) -> np.ndarray:
        """`similarity` on NumPy embeddings (evaluation and calibration run there)."""
        vectors = self.to("cpu", torch.float32)
        with torch.inference_mode():
            return vectors.similarity(torch.from_numpy(np.ascontiguousarray(prompts, np.float32))).numpy()
