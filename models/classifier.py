"""TaskClassifier: a bi-encoder that scores prompts against task descriptions.

Prompts and task descriptions are embedded into one space; a task's score is the cosine similarity
between the prompt and the task's prototype. Task prototypes are computed once per router, so a
request costs one encoder pass plus a [1, D] x [D, T] product, whatever the number of tasks, and a
new taxonomy needs no new weights. The mixture-of-experts classifier keeps this interface:
`encode_prompts`, `encode_tasks`, `task_prototypes`, `similarity`.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import ClassifierConfig
from models.encoder import SentenceEncoder


class TaskClassifier(nn.Module):
    def __init__(self, encoder: SentenceEncoder, config: ClassifierConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings [B, D] of user requests."""
        return self.encoder(input_ids, attention_mask)

    def encode_tasks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings [B, D] of task descriptions and task examples.

        Separate from encode_prompts because a trained classifier may treat the two sides
        differently (asymmetric heads or experts); the base encoder treats them alike.
        """
        return self.encoder(input_ids, attention_mask)

    def task_prototypes(
        self, descriptions: torch.Tensor, examples: list[torch.Tensor | None]
    ) -> torch.Tensor:
        """One unit-norm vector per task [T, D] from its description and optional examples.

        With examples, the prototype mixes the description with the examples' mean: examples read
        like real prompts, which a description does not, so they pull the prototype towards them.
        """
        weight = self.config.description_weight
        rows = []
        for description, task_examples in zip(descriptions, examples, strict=True):
            if task_examples is None or len(task_examples) == 0:
                rows.append(description)
            else:
                mean = nn.functional.normalize(task_examples.mean(dim=0), dim=-1)
                rows.append(weight * description + (1.0 - weight) * mean)
        return nn.functional.normalize(torch.stack(rows), dim=-1)

    @staticmethod
    def similarity(prompts: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [B, T] of unit-norm prompt embeddings and task prototypes."""
        return prompts @ prototypes.T


def match_probabilities(
    similarities: torch.Tensor, threshold: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn similarities [B, T] into task probabilities [B, T] and a fallback probability [B].

    The threshold enters the softmax as a virtual "no task" candidate, so the probabilities of the
    tasks and of fallback sum to one and fallback is the most probable exactly when the best
    similarity is below the threshold: the decision and the probabilities never disagree.
    """
    fallback = torch.full_like(similarities[:, :1], threshold)
    probs = torch.softmax(torch.cat([similarities, fallback], dim=1).float() / temperature, dim=1)
    return probs[:, :-1], probs[:, -1]
