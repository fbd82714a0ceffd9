"""TaskClassifier: a bi-encoder that scores prompts against task descriptions.

Prompts and task descriptions are embedded into one space; a task's score is the cosine similarity
between the prompt and the task's prototype. Task prototypes are computed once per router, so a
request costs one encoder pass plus a [1, D] x [D, T] product, whatever the number of tasks, and a
new taxonomy needs no new weights. The mixture-of-experts classifier keeps this interface:
`encode_prompts`, `encode_tasks`, `task_prototypes`, `similarity`.

A checkpoint retrained on one taxonomy may also carry *learned task vectors* (a classification head
over the prototypes, `learned_tasks`): for a task whose description is exactly one it was trained
on, the learned vector stands in for the description's embedding; any other task reads as usual.
It may also keep that taxonomy's labelled prompts (`learned_examples`), which then score a task
together with its prototype (models/tasks.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from models.config import ClassifierConfig
from models.encoder import SentenceEncoder
from models.moe import MoEFeedForward, upcycle
from models.nomatch import mix_prototypes
from models.tasks import TaskVectors


class TaskClassifier(nn.Module):
    """With `config.moe_layers` set, the named encoder layers carry a mixture of experts (moe.py);
    without, it is the plain encoder. Both sides (prompts, task texts) share all weights."""

    def __init__(self, encoder: SentenceEncoder, config: ClassifierConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        # Description text -> unit vector [D] learned for it (a retrained taxonomy's head); see
        # `describe`. Empty for general checkpoints.
        self.learned_tasks: dict[str, torch.Tensor] = {}
        # Description text -> unit-norm embeddings [n, D] of the labelled prompts a retrained
        # checkpoint kept for it (scored by their nearest one, models/tasks.py). Empty otherwise.
        self.learned_examples: dict[str, torch.Tensor] = {}
        self.moe_layers: list[MoEFeedForward] = []
        if config.moe_layers:
            self.moe_layers = upcycle(
                encoder.transformer, config.moe_layers, config.num_experts, config.top_k, config.expert_rank
            )

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @contextmanager
    def _routing(self, attention_mask: torch.Tensor) -> Iterator[None]:
        for moe in self.moe_layers:  # experts route real tokens only
            moe.token_mask = attention_mask
        try:
            yield
        finally:
            for moe in self.moe_layers:
                moe.token_mask = None

    @contextmanager
    def static_graph(self) -> Iterator[None]:
        """The encoder (`self.encoder`) as a graph with static shapes: eager attention (plain MatMuls,
        no kernel choice made from the data), every token through its experts (no data-sized
        gather), no expert statistics. For ONNX export and CUDA graph capture; exact for the real
        tokens, because attention never reads padding and pooling drops it."""
        transformer = self.encoder.transformer
        previous = transformer.config._attn_implementation
        transformer.set_attn_implementation("eager")
        for moe in self.moe_layers:
            moe.token_mask, moe.record_stats = None, False
        try:
            yield
        finally:
            transformer.set_attn_implementation(previous)
            for moe in self.moe_layers:
                moe.record_stats = True

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with self._routing(attention_mask):
            return self.encoder(input_ids, attention_mask)

    def encode_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings [B, D] of user requests."""
        return self._encode(input_ids, attention_mask)

    def encode_tasks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings [B, D] of task descriptions and task examples.

        Separate from encode_prompts so that a classifier may treat the two sides differently;
        this one shares every weight between them.
        """
        return self._encode(input_ids, attention_mask)

    def encode_upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
        """Unit-norm embeddings from token states after the first `start` encoder layers
        (`encoder.lower`); training uses it to skip frozen layers it has already run."""
        with self._routing(attention_mask):
            return self.encoder.upper(hidden, attention_mask, start)

    def forward(
        self,
        prompts: torch.Tensor,
        prompt_mask: torch.Tensor,
        tasks: torch.Tensor,
        task_mask: torch.Tensor,
        start: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training step's encoding: (prompt embeddings, task embeddings, balancing loss).

        Inputs are token ids, or with `start > 0` token states after that many layers.
        A single forward for both sides, so DistributedDataParallel sees (and syncs) every use.
        """
        for moe in self.moe_layers:  # only this step's balance: an evaluation in between leaves its own
            moe.aux_losses = []
        if start:
            p_emb = self.encode_upper(prompts, prompt_mask, start)
            t_emb = self.encode_upper(tasks, task_mask, start)
        else:
            p_emb = self.encode_prompts(prompts, prompt_mask)
            t_emb = self.encode_tasks(tasks, task_mask)
        return p_emb, t_emb, self.aux_loss().to(p_emb.device)

    def aux_loss(self) -> torch.Tensor:
        """Mean load-balancing loss of the MoE layers over the forwards since the last call
        (1.0 = perfectly balanced), and clears them; zero without experts."""
        losses = [loss for moe in self.moe_layers for loss in moe.aux_losses]
        for moe in self.moe_layers:
            moe.aux_losses = []
        if not losses:
            return torch.zeros(())
        return torch.stack(losses).mean()

    def describe(self, texts: Sequence[str], embeddings: torch.Tensor) -> torch.Tensor:
        """Description embeddings [T, D] with the learned vector in place of each description this
        checkpoint learned one for (exact text match); unchanged without learned tasks."""
        if not self.learned_tasks or not any(t in self.learned_tasks for t in texts):
            return embeddings
        out = embeddings.clone()
        for i, text in enumerate(texts):
            if text in self.learned_tasks:
                out[i] = self.learned_tasks[text].to(device=out.device, dtype=out.dtype)
        return out

    def task_prototypes(
        self, descriptions: torch.Tensor, examples: list[torch.Tensor | None]
    ) -> torch.Tensor:
        """One unit-norm vector per task [T, D] from its description and optional examples.

        With examples, the prototype mixes the description with the examples' mean: examples read
        like real prompts, which a description does not, so they pull the prototype towards them.
        """
        return mix_prototypes(descriptions, examples, self.config.description_weight)

    def task_vectors(
        self, texts: Sequence[str], descriptions: torch.Tensor, examples: list[torch.Tensor | None]
    ) -> TaskVectors:
        """What prompts are scored against for tasks with these description texts: the prototypes,
        plus the learned examples of the descriptions this checkpoint kept some for."""
        prototypes = self.task_prototypes(descriptions, examples)
        if not self.learned_examples:
            return TaskVectors(prototypes)
        learned = [self.learned_examples.get(t) for t in texts]
        return TaskVectors.build(prototypes, learned, self.config.nearest_example_weight)

    @staticmethod
    def similarity(prompts: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [B, T] of unit-norm prompt embeddings and task prototypes."""
        return prompts @ prototypes.T


def match_probabilities(
    similarities: np.ndarray, threshold: float, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Turn similarities [B, T] into task probabilities [B, T] and a fallback probability [B].

    The threshold enters the softmax as a virtual "no task" candidate, so the probabilities of the
    tasks and of fallback sum to one and fallback is the most probable exactly when the best
    similarity is below the threshold: the decision and the probabilities never disagree.
    NumPy, not torch: the server calls it once per request on a [1, T] row, where a torch op's
    dispatch costs more than the arithmetic (measured: a third of the decision's time).
    """
    sims = np.asarray(similarities, dtype=np.float64)
    logits = np.concatenate([sims, np.full((sims.shape[0], 1), threshold)], axis=1) / temperature
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    return probs[:, :-1], probs[:, -1]
