"""Checkpoint format: one directory holds everything needed to rebuild a TaskClassifier.

    config.json          ClassifierConfig (names the base encoder)
    metadata.json        free-form facts: what it was trained on, metrics, calibrated threshold
    weights.safetensors  optional: only the tensors that differ from the base encoder's weights
    task_head.json       optional: the descriptions a retrained checkpoint learned task vectors for
                         (the vectors are the `task_head` tensor of weights.safetensors, one row each)
                         and may keep labelled prompts for: `task_examples` [E, D] (float16) with
                         `task_example_owner` [E] (the row of task_head.json each belongs to)

Storing only the difference keeps a fine-tuned checkpoint small enough for git, while the base
weights come from a package (or path) named in config.json. A changed pretrained tensor may be
stored as a half-precision difference `NAME.delta` (added to the base weight at load): fine-tuning
moves weights little, so the difference keeps its precision in 16 bits and the file halves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from models.classifier import TaskClassifier
from models.config import ClassifierConfig
from models.encoder import load_encoder

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
# What the server loads by default: the trained mixture-of-experts classifier (see its README.md).
DEFAULT_CHECKPOINT = CHECKPOINTS / "default"
# The packaged base encoder as is (no weights stored): where training starts and the baseline it beats.
PLAIN_CHECKPOINT = CHECKPOINTS / "minilm-base"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.safetensors"
TASK_HEAD_FILE = "task_head.json"
TASK_HEAD = "task_head"  # the tensor [T, D] in weights.safetensors (and training's parameter name)
TASK_EXAMPLES = "task_examples"
TASK_EXAMPLE_OWNER = "task_example_owner"
DELTA = ".delta"


def load_checkpoint(
    path: str | Path, **overrides: Any
) -> tuple[TaskClassifier, PreTrainedTokenizerBase, dict[str, Any]]:
    """Rebuild (classifier in eval mode, tokenizer, metadata) from a checkpoint directory.

    `overrides` replace config fields first (training uses it to add experts to a checkpoint
    that has none); stored tensors the new architecture lacks are an error, missing ones keep
    their fresh initialisation.
    """
    directory = Path(path)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"{directory} is not a checkpoint: it has no {CONFIG_FILE}")
    config = ClassifierConfig.from_dict({**json.loads(config_path.read_text()), **overrides})
    encoder, tokenizer = load_encoder(config.encoder)
    model = TaskClassifier(encoder, config)
    weights = directory / WEIGHTS_FILE
    if weights.is_file():
        state = load_file(str(weights))
        head = state.pop(TASK_HEAD, None)
        learned, owner = state.pop(TASK_EXAMPLES, None), state.pop(TASK_EXAMPLE_OWNER, None)
        if head is not None:
            descriptions = json.loads((directory / TASK_HEAD_FILE).read_text())
            if len(descriptions) != len(head):
                raise ValueError(
                    f"{directory}: {len(descriptions)} descriptions for {len(head)} task vectors"
                )
            vectors = torch.nn.functional.normalize(head.float(), dim=-1)
            model.learned_tasks = dict(zip(descriptions, vectors, strict=True))
            if learned is not None and owner is not None:
                if len(owner) != len(learned) or (len(owner) and int(owner.max()) >= len(descriptions)):
                    raise ValueError(f"{directory}: {TASK_EXAMPLE_OWNER} does not index task_head.json")
                rows = torch.nn.functional.normalize(learned.float(), dim=-1)
                model.learned_examples = {
                    text: rows[owner == i] for i, text in enumerate(descriptions) if bool((owner == i).any())
                }
        current = model.state_dict()
        for key in [k for k in state if k.endswith(DELTA)]:
            name = key.removesuffix(DELTA)
            if name not in current:
                raise ValueError(f"{weights} has a difference for {name}, which the model does not have")
            state[name] = current[name] + state.pop(key).to(current[name].dtype)
        unknown = sorted(set(state) - set(model.state_dict()))
        if unknown:
            raise ValueError(f"{weights} has tensors the model does not: {unknown[:5]}")
        model.load_state_dict(state, strict=False)
    metadata_path = directory / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    return model.eval(), tokenizer, metadata


def base_state(encoder: str) -> dict[str, torch.Tensor]:
    """The packaged/pretrained weights a checkpoint is stored as a difference from."""
    base, _ = load_encoder(encoder)
    return {
        k: v.detach().clone()
        for k, v in TaskClassifier(base, ClassifierConfig(encoder=encoder)).state_dict().items()
    }


def save_checkpoint(
    model: TaskClassifier,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    base_state: dict[str, torch.Tensor] | None = None,
    delta_dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` as a checkpoint directory; with `base_state`, store only tensors that differ,
    and with `delta_dtype` (e.g. torch.float16) store changed pretrained tensors as differences in
    that type (not bit-exact, about 1e-3 of the change; new tensors stay exact)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    (directory / METADATA_FILE).write_text(json.dumps(metadata or {}, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.learned_tasks:  # a retrained taxonomy's head: one row per description, in order
        state[TASK_HEAD] = torch.stack(list(model.learned_tasks.values())).cpu().contiguous()
        (directory / TASK_HEAD_FILE).write_text(json.dumps(list(model.learned_tasks), indent=1) + "\n")
        kept = [
            (i, model.learned_examples[t])
            for i, t in enumerate(model.learned_tasks)
            if t in model.learned_examples
        ]
        if kept:  # half precision: cosine scores move by ~1e-3 at most, the file halves
            state[TASK_EXAMPLES] = torch.cat([e for _, e in kept]).to(torch.float16).cpu().contiguous()
            state[TASK_EXAMPLE_OWNER] = torch.cat(
                [torch.full((len(e),), i, dtype=torch.int32) for i, e in kept]
            ).contiguous()
    elif (directory / TASK_HEAD_FILE).exists():
        (directory / TASK_HEAD_FILE).unlink()
    if base_state is not None:
        state = {
            k: v for k, v in state.items() if k not in base_state or not torch.equal(v, base_state[k].cpu())
        }
        if delta_dtype is not None:
            state = {
                (k + DELTA if k in base_state else k): (
                    (v - base_state[k].cpu()).to(delta_dtype).contiguous() if k in base_state else v
                )
                for k, v in state.items()
            }
    weights = directory / WEIGHTS_FILE
    if state:
        save_file(state, str(weights))
    elif weights.exists():
        weights.unlink()
    return directory


def save_difference(
    model: TaskClassifier,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    delta_dtype: torch.dtype | None = None,
) -> Path:
    """Save a trained model storing only what differs from its base encoder's pretrained weights."""
    return save_checkpoint(
        model, path, metadata, base_state=base_state(model.config.encoder), delta_dtype=delta_dtype
    )
