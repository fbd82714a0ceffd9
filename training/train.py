"""Contrastive training that teaches the classifier to match prompts to task descriptions in general.

Each step draws prompts from a few taxonomies (so that in-batch negatives are real neighbours),
taxonomies in proportion to the square root of their size with a per-task cap, so no large set
dominates. A prompt's candidates are its own task's description (the positive), hard negatives (the
descriptions of its own taxonomy most similar to the positive, by the current model: refreshed at
every evaluation) and every other candidate in the batch (in-batch negatives); candidates from other
taxonomies that say nearly the same thing as the positive are masked, since "weather_query" and
"GetWeather" are not really negatives. A share of the candidates is written as the task's name
instead of its description (operators write both styles). Loss: cross-entropy over the candidates
at a fixed scale, plus the experts' load-balancing loss, and optionally (`distill`) a relational
distillation term that keeps the prompts' similarities to one another where the starting model had them.

Validation is zero-shot accuracy (descriptions only) on the `val_sets`' validation splits. For
model selection that transfers, pass held-out *families* there (training/loto.py does) and keep the
last state; early stopping on the training sets' own validation split picks models that do not
transfer. With a `run_dir`, every evaluation writes a resume point (trainable weights, optimizer,
schedule, sampler position, RNG states, history) and a snapshot of the trainable weights, and a
call with the same `run_dir` continues from the last one.

The embeddings and the lower `frozen_layers` encoder layers stay frozen (the experts sit above
them): they run once per step without autograd, and their outputs for descriptions and validation
prompts are computed once and kept, so a CPU step costs what the top layers cost.
Seeded and reproducible; `torchrun --nproc_per_node N -m training.cli train ...`
runs it data-parallel with DistributedDataParallel (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from models import PLAIN_CHECKPOINT, TaskClassifier, load_checkpoint
from models.checkpoint import TASK_HEAD
from training.data import Taxonomy, ensure_val_split
from training.encode import as_user, collate, embed, token_rows
from training.evaluate import pick_threshold, score

log = logging.getLogger(__name__)

# The open-set term's learned similarity level: a parameter on the model while it trains (so resume
# points and snapshots carry it), removed at the end and reported in the summary.
OPEN_SET_LEVEL = "open_set_level"
_OPEN_SET_START = 0.3  # about where the plain encoder's best similarities of unrelated prompts sit


@dataclass(frozen=True)
class TrainConfig:
    # Architecture: experts in the FFN of these encoder layers (() = no experts: the dense ablation
    # then trains a single always-on low-rank adapter, see `dense_adapter`).
    moe_layers: tuple[int, ...] = (3, 4, 5)
    num_experts: int = 4
    top_k: int = 2
    expert_rank: int = 16
    # The no-experts ablation: one expert, always used, rank expert_rank * top_k (same active size).
    dense_adapter: bool = False
    # Fine-tune the pretrained weights too (best for retraining on one taxonomy; the checkpoint
    # then stores them). Off: only gates and experts train, and the checkpoint stays a few MB.
    train_base: bool = False
    # Retraining on one taxonomy: also learn one vector per task (a classification head over the
    # prototypes, initialised from the description embeddings), saved with the checkpoint and used
    # in place of those exact descriptions at serving time (models/classifier.py `describe`).
    task_head: bool = False
    # With task_head: also keep the taxonomy's train-split prompts, embedded by the final model, as
    # learned examples; each task is then scored with its nearest one as well as its vector
    # (models/tasks.py; the checkpoint grows by E x D float16, ~6 MB for 8,000 prompts).
    nearest_examples: bool = False
    # The embeddings and this many lower encoder layers stay frozen (the experts sit above them):
    # they run without autograd, and their outputs for texts that recur (descriptions, validation
    # prompts) are computed once, which makes a CPU step several times cheaper. 0 = train through all.
    frozen_layers: int = 3
    init: str = str(PLAIN_CHECKPOINT)
    lr: float = 1e-3
    base_lr: float = 3e-5
    batch_size: int = 32
    taxonomies_per_batch: int = 4  # a batch = this many taxonomies' prompts; 0: one draw per prompt
    hard_negatives: int = 4
    refresh_hard: bool = True  # hard negatives from the current model at each evaluation
    name_descriptions: float = 0.15  # share of candidates written as the task's name
    max_steps: int = 1000
    # Stop after this many steps in this call (0: run to max_steps). With a run_dir, the next call
    # continues where this one stopped: long runs in slices on a machine lent for a while.
    stop_after: int = 0
    warmup_steps: int = 50
    eval_every: int = 100
    patience: int = 4
    keep_best: bool = True  # end with the best validation state; False keeps the last one
    aux_weight: float = 0.01
    # Weight of the open-set term (0 = off): each prompt is also scored with its own task left out,
    # against a learned similarity level, and must then match nothing (fall below the level) while
    # with its task present it must clear it. The softmax alone is blind to a shift of a prompt's
    # whole row of similarities, which is exactly what tells an unseen neighbouring intent ("top up
    # by cheque" among 50 banking intents) from an in-scope prompt.
    open_set: float = 0.0
    # Weight of relational distillation toward the starting model (0 = off): within each step, the
    # prompts' similarities to one another (and the candidate descriptions' to one another) are
    # pulled toward what the starting model says, as a softmax over each row at `scale` (KL). It
    # keeps the base encoder's general geometry while the experts learn description matching, so
    # that taxonomies unlike the training mix do not lose what the plain encoder knew of them.
    distill: float = 0.0
    # The encoder's own dropout in the layers that train. Distillation needs it off: the frozen
    # teacher runs without it, and dropout noise alone put the relational KL at 0.30 on the first
    # step (MiniLM, p=0.1), a floor the student would chase instead of the teacher's geometry.
    dropout: bool = True
    scale: float = 20.0  # 1 / temperature of the contrastive softmax
    max_len: int = 64  # prompt tokens during training; descriptions and most prompts are shorter
    max_per_task: int = 300  # caps big taxonomies so that small ones are not drowned
    # Multiply chosen taxonomies' sampling weights: "name=factor,name=factor" (e.g. the LLM-request
    # sets, closest to a router's real traffic, when a broad mix would drown them). Unknown names fail.
    set_weights: str = ""
    val_limit: int = 600  # validation rows per taxonomy
    cross_taxonomy_mask: float = 0.7  # mask other-taxonomy candidates this similar to the positive
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the checkpoint metadata


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run plainly."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _is_expert(name: str) -> bool:
    """Gate and expert tensors: what trains when the pretrained weights stay frozen."""
    return ".gate." in name or ".experts." in name


_LAYER = re.compile(r"\.layer\.(\d+)\.")


def _trainable(name: str, cfg: TrainConfig) -> bool:
    if _is_expert(name):
        return True
    if not cfg.train_base:
        return False
    if cfg.frozen_layers == 0:
        return True
    layer = _LAYER.search(name)
    return layer is not None and int(layer.group(1)) >= cfg.frozen_layers


def build_model(cfg: TrainConfig) -> tuple[TaskClassifier, PreTrainedTokenizerBase]:
    if cfg.dense_adapter:
        arch = {
            "moe_layers": cfg.moe_layers,
            "num_experts": 1,
            "top_k": 1,
            "expert_rank": cfg.expert_rank * cfg.top_k,
        }
    else:
        arch = {
            "moe_layers": cfg.moe_layers,
            "num_experts": cfg.num_experts,
            "top_k": cfg.top_k,
            "expert_rank": cfg.expert_rank,
        }
    model, tokenizer, _ = load_checkpoint(cfg.init, **arch)
    depth = len(model.encoder.layers())
    lowest = min((i % depth for i in cfg.moe_layers), default=depth)
    if not 0 <= cfg.frozen_layers <= lowest:
        raise ValueError(
            f"frozen_layers={cfg.frozen_layers} must be between 0 and the lowest expert layer ({lowest})"
        )
    for name, param in model.named_parameters():
        param.requires_grad = _trainable(name, cfg)
    return model, tokenizer


class _Lower:
    """The frozen embeddings and lower layers. They run without autograd and without dropout, and
    their outputs are kept for texts that recur (descriptions every step, validation prompts every
    evaluation). With no frozen layers, token ids pass straight through."""

    def __init__(self, model: TaskClassifier, layers: int, pad: int, device: torch.device) -> None:
        self.model, self.layers, self.pad, self.device = model, layers, pad, device
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    @torch.no_grad()  # not inference_mode: kept states feed later training steps
    def _run(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = collate(rows, self.pad, self.device)
        encoder = self.model.encoder
        was = encoder.training
        encoder.eval()
        try:
            return encoder.lower(ids, mask, self.layers), mask
        finally:
            encoder.train(was)

    def __call__(self, rows: list[list[int]], keep: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.layers:
            return collate(rows, self.pad, self.device)
        if not keep:
            return self._run(rows)
        missing = list(dict.fromkeys(tuple(r) for r in rows if tuple(r) not in self.cache))
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            states, _ = self._run([list(r) for r in chunk])
            for i, row in enumerate(chunk):
                self.cache[row] = states[i, : len(row)].clone()
        width = max(len(r) for r in rows)
        states = torch.zeros(len(rows), width, self.model.dim, device=self.device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for i, row in enumerate(rows):
            states[i, : len(row)] = self.cache[tuple(row)]
            mask[i, : len(row)] = 1
        return states, mask


@dataclass
class _ValSet:
    """A taxonomy's validation prompts and descriptions as token rows (built once)."""

    name: str
    prompts: list[list[int]]
    labels: torch.Tensor
    descriptions: list[list[int]]


def parse_set_weights(spec: str, names: list[str]) -> dict[str, float]:
    """ "name=factor,..." -> {name: factor}; a name not among the training sets or a factor that is
    not a positive number is a mistake worth stopping for, not a silent no-op."""
    factors: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in names:
            raise ValueError(f"set_weights: {item!r} must be NAME=FACTOR with NAME one of {sorted(names)}")
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if not factor > 0:
            raise ValueError(f"set_weights: the factor in {item!r} must be a positive number")
        factors[name] = factor
    return factors


class _Sampler:
    """Draws batches: taxonomies in proportion to the square root of their size, then prompts."""

    def __init__(
        self,
        taxonomies: list[Taxonomy],
        tokenizer: PreTrainedTokenizerBase,
        cfg: TrainConfig,
        rng: random.Random,
        hard: list[list[list[int]]],
    ) -> None:
        self.rng = rng
        self.cfg = cfg
        self.hard = hard
        factors = parse_set_weights(cfg.set_weights, [t.name for t in taxonomies])  # before the tokenising
        self.rows: list[list[tuple[list[int], int]]] = []
        for taxonomy in taxonomies:
            index = {name: i for i, name in enumerate(taxonomy.task_names)}
            by_task: dict[str, list] = {}
            for row in taxonomy.rows("train", with_fallback=False):
                by_task.setdefault(row.label, []).append(row)
            chosen = [
                r for rows in by_task.values() for r in rng.sample(rows, min(len(rows), cfg.max_per_task))
            ]
            ids = token_rows(tokenizer, [r.messages for r in chosen], cfg.max_len)
            self.rows.append([(i, index[r.label]) for i, r in zip(ids, chosen, strict=True)])
        sizes = np.array(
            [math.sqrt(len(r)) * factors.get(t.name, 1.0) for r, t in zip(self.rows, taxonomies, strict=True)]
        )
        self.weights = (sizes / sizes.sum()).tolist()

    def batch(self) -> tuple[list[list[int]], list[tuple[int, int]], list[list[tuple[int, int]]]]:
        """(prompt token rows, positive (taxonomy, task) per prompt, hard negatives per prompt)."""
        size, groups = self.cfg.batch_size, self.cfg.taxonomies_per_batch
        if groups:
            chosen = self.rng.choices(range(len(self.rows)), weights=self.weights, k=min(groups, size))
            picks = [chosen[i % len(chosen)] for i in range(size)]
        else:
            picks = self.rng.choices(range(len(self.rows)), weights=self.weights, k=size)
        prompts, positives, negatives = [], [], []
        for t in picks:
            ids, task = self.rng.choice(self.rows[t])
            pool = self.hard[t][task][: 2 * self.cfg.hard_negatives]
            prompts.append(ids)
            positives.append((t, task))
            negatives.append([(t, j) for j in self.rng.sample(pool, min(len(pool), self.cfg.hard_negatives))])
        return prompts, positives, negatives


def _hard_negatives(emb: list[torch.Tensor], keep: int) -> list[list[list[int]]]:
    """For each taxonomy and task, the `keep` other tasks with the most similar descriptions, most
    similar first."""
    out = []
    for e in emb:
        sims = e @ e.T
        sims.fill_diagonal_(-2.0)
        out.append(sims.argsort(dim=1, descending=True)[:, : min(keep, len(e) - 1)].tolist())
    return out


def label_text(name: str) -> str:
    """A task name as an operator might write it for a description: 'buses.buy_bus_ticket' ->
    'buses: buy bus ticket', 'GetWeather' -> 'get weather'."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return re.sub(r"\s*\.\s*", ": ", spaced).strip().lower()


def _snapshot(model: TaskClassifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _val_sets(
    sets: list[Taxonomy], tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, max_len: int
) -> list[_ValSet]:
    out = []
    for taxonomy in sets:
        rows = taxonomy.rows("val", with_fallback=False)
        if len(rows) > cfg.val_limit:
            rows = random.Random(cfg.seed).sample(rows, cfg.val_limit)
        index = {name: i for i, name in enumerate(taxonomy.task_names)}
        descriptions = as_user([t.description for t in taxonomy.tasks])
        out.append(
            _ValSet(
                taxonomy.name,
                token_rows(tokenizer, [r.messages for r in rows], max_len),
                torch.tensor([index[r.label] for r in rows]),
                token_rows(tokenizer, descriptions, max_len),
            )
        )
    return out


def _embed_rows(model: TaskClassifier, lower: _Lower, rows: list[list[int]]) -> torch.Tensor:
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # batches pad little
    out = torch.empty(len(rows), model.dim)
    for start in range(0, len(order), 128):
        chunk = order[start : start + 128]
        states, mask = lower([rows[i] for i in chunk], keep=True)
        if lower.layers:
            emb = model.encode_upper(states, mask, lower.layers)
        else:
            emb = model.encode_prompts(states, mask)
        out[chunk] = emb.float().cpu()
    return out


@torch.no_grad()
def _validate(
    model: TaskClassifier, lower: _Lower, sets: list[_ValSet], heads: dict[str, torch.Tensor] | None = None
) -> dict[str, float]:
    """Zero-shot closed-set accuracy (descriptions only, or a taxonomy's learned task vectors in
    `heads`) on each taxonomy's validation prompts."""
    model.eval()
    result = {}
    for val in sets:
        if heads and val.name in heads:
            tasks = nn.functional.normalize(heads[val.name].detach().float().cpu(), dim=-1)
        else:
            tasks = _embed_rows(model, lower, val.descriptions)
        sims = _embed_rows(model, lower, val.prompts) @ tasks.T
        result[val.name] = float((sims.argmax(dim=1) == val.labels).float().mean())
    model.train()
    return result


def _description_embeddings(
    model: TaskClassifier, lower: _Lower, desc_rows: list[list[list[int]]]
) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        out = [_embed_rows(model, lower, [r[0] for r in rows]) for rows in desc_rows]
    model.train()
    return out


def train(
    cfg: TrainConfig,
    train_sets: list[Taxonomy],
    val_sets: list[Taxonomy] | None = None,
    run_dir: Path | None = None,
) -> tuple[TaskClassifier, PreTrainedTokenizerBase, dict[str, Any]]:
    """Train and return (best model, tokenizer, summary); only rank 0's summary is complete.
    With `run_dir`, resumable (see the module doc) and snapshots at every evaluation."""
    rank, world, local_rank = _distributed()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed + rank)  # each rank draws its own batches
    device = torch.device(
        f"cuda:{local_rank}"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    train_sets = [ensure_val_split(t) for t in train_sets]
    val_sets = [ensure_val_split(t) for t in (val_sets or train_sets)]

    if cfg.distill and cfg.dropout:
        raise ValueError(
            "distill compares the student's similarities with the teacher's, which runs without "
            "dropout: turn the student's off too (dropout=False, --no-dropout)"
        )
    model, tokenizer = build_model(cfg)
    model.to(device)
    if not cfg.dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    pad = tokenizer.pad_token_id or 0
    lower = _Lower(model, cfg.frozen_layers, pad, device)
    # The starting model, frozen, before any resume point is loaded: what distillation pulls toward.
    teacher = _frozen_copy(model) if cfg.distill else None
    desc_len = model.config.max_seq_len  # descriptions are few and kept, so never clipped short
    # Per task: [its description, its name as text]; the name is the other description style.
    desc_rows = [
        [
            [d, n]
            for d, n in zip(
                token_rows(tokenizer, as_user([t.description for t in tax.tasks]), desc_len),
                token_rows(tokenizer, as_user([label_text(t.name) for t in tax.tasks]), desc_len),
                strict=True,
            )
        ]
        for tax in train_sets
    ]
    # The cross-taxonomy mask comes from the starting model's view of the descriptions.
    start_emb = _description_embeddings(model, lower, desc_rows)
    keep_hard = 2 * cfg.hard_negatives
    hard = _hard_negatives(start_emb, keep_hard)
    all_emb = torch.cat(start_emb)
    offsets = np.cumsum([0] + [len(e) for e in start_emb]).tolist()
    cross_sim = (all_emb @ all_emb.T).cpu()
    # The teacher's view of every description in both styles, computed once.
    teacher_desc = _teacher_descriptions(teacher, lower, desc_rows) if teacher is not None else None
    sampler = _Sampler(train_sets, tokenizer, cfg, rng, hard)
    val_rows = _val_sets(val_sets, tokenizer, cfg, desc_len)
    heads: dict[str, torch.Tensor] = {}
    if cfg.task_head:
        if len(train_sets) != 1:
            raise ValueError(
                f"task_head learns one taxonomy's task vectors; got {len(train_sets)} taxonomies"
            )
        model.register_parameter(TASK_HEAD, nn.Parameter(start_emb[0].clone().to(device)))
        heads[train_sets[0].name] = model.task_head
    elif cfg.nearest_examples:
        raise ValueError(
            "nearest_examples keeps one taxonomy's prompts for its learned task vectors: add task_head"
        )

    if cfg.open_set:
        model.register_parameter(OPEN_SET_LEVEL, nn.Parameter(torch.tensor(_OPEN_SET_START, device=device)))

    trainable = [p for p in model.parameters() if p.requires_grad]
    # Gates, experts, the task head and the open-set level start from scratch and take the adapter
    # rate; pretrained weights (with train_base) the small base rate.
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    own = (TASK_HEAD, OPEN_SET_LEVEL)
    fast = [p for n, p in named if _is_expert(n) or n in own]
    base = [p for n, p in named if not (_is_expert(n) or n in own)]
    optimizer = torch.optim.AdamW(
        [{"params": fast, "lr": cfg.lr}, {"params": base, "lr": cfg.base_lr}], weight_decay=0.01
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / cfg.warmup_steps)
            * max(0.0, 0.5 * (1 + math.cos(math.pi * min(step, cfg.max_steps) / cfg.max_steps)))
        ),
    )
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None, find_unused_parameters=True
        )

    history: list[dict[str, Any]] = []
    best_score, best_state, best_step, stale, first = -1.0, None, 0, 0, 1
    losses: list[float] = []
    aux_losses: list[float] = []
    distill_losses: list[float] = []
    # One process only: under DDP each rank's sampler would need its own resume point.
    resume = run_dir / "resume.pt" if run_dir is not None and rank == 0 and world == 1 else None
    if resume is not None and resume.exists():
        saved = torch.load(resume, weights_only=False)
        before = saved.get("config")  # absent in resume points written before this check existed
        # A setting the saved run lacks was added later: that run had it at its default.
        defaults = _resumable_config(TrainConfig())
        changed = {
            k: (before.get(k, defaults.get(k)), v)
            for k, v in _resumable_config(cfg).items()
            if before and before.get(k, defaults.get(k)) != v
        }
        if changed:
            raise ValueError(
                f"{run_dir} holds a run with other settings {changed} (saved, now): use the same flags "
                "to continue it, or another --out to start a new run"
            )
        model.load_state_dict(saved["trainable"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        rng.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["numpy_rng"])
        sampler.hard = saved["hard"]
        history, losses, aux_losses = saved["history"], saved["losses"], saved["aux_losses"]
        best_score, best_step, stale = saved["best_score"], saved["best_step"], saved["stale"]
        best_state = {**model.state_dict(), **saved["best_trainable"]}
        first = saved["step"] + 1
        log.info("resumed %s at step %d of %d", run_dir, saved["step"], cfg.max_steps)
    elif rank == 0:
        initial = _validate(model, lower, val_rows, heads)
        best_score, best_state = (
            float(np.mean(list(initial.values()))),
            {k: v.detach().clone() for k, v in model.state_dict().items()},
        )
        history.append({"step": 0, "val": initial, "val_mean": best_score})

    def save_point(step: int) -> None:
        """The resume point after `step`, and a snapshot of the trainable weights at that step."""
        assert resume is not None
        resume.parent.mkdir(parents=True, exist_ok=True)
        trainable = _snapshot(model)
        _save_atomic(trainable, resume.parent / f"step-{step}.pt")
        best = {k: best_state[k].cpu() for k in trainable} if best_state is not None else trainable
        _save_atomic(
            {
                "config": _resumable_config(cfg),
                "step": step,
                "trainable": trainable,
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": rng.getstate(),
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(),
                "hard": sampler.hard,
                "history": history,
                "losses": losses,
                "aux_losses": aux_losses,
                "best_score": best_score,
                "best_step": best_step,
                "stale": stale,
                "best_trainable": best,
            },
            resume,
        )

    started = time.perf_counter()
    bar = tqdm(total=cfg.max_steps, initial=first - 1, desc="train", disable=not cfg.progress or rank != 0)
    step, interrupted = first - 1, False
    for step in range(first, cfg.max_steps + 1):
        prompts, positives, negatives = sampler.batch()
        columns: dict[tuple[int, int], int] = {}
        for pair in positives + [n for negs in negatives for n in negs]:
            columns.setdefault(pair, len(columns))
        cand = list(columns)
        styles = [int(rng.random() < cfg.name_descriptions) for _ in cand]
        p_in, p_mask = lower(prompts)
        t_in, t_mask = lower([desc_rows[t][j][v] for (t, j), v in zip(cand, styles, strict=True)], keep=True)
        p_emb, t_emb, aux = net(p_in, p_mask, t_in, t_mask, cfg.frozen_layers)
        logits = cfg.scale * p_emb @ t_emb.T
        global_pos = torch.tensor([offsets[t] + j for t, j in positives])
        global_cand = torch.tensor([offsets[t] + j for t, j in cand])
        same_tax = torch.tensor([[t == ct for ct, _ in cand] for t, _ in positives])
        near = cross_sim[global_pos][:, global_cand] > cfg.cross_taxonomy_mask
        target = torch.tensor([columns[p] for p in positives])
        mask = (near & ~same_tax).to(device)
        mask[torch.arange(len(positives)), target] = False
        logits = logits.masked_fill(mask, float("-inf"))
        if cfg.open_set:
            loss = _open_set_loss(logits, target.to(device), cfg.scale * model.open_set_level, cfg.open_set)
        else:
            loss = nn.functional.cross_entropy(logits, target.to(device))
        if cfg.task_head:  # the head scores every task of the taxonomy, not only the sampled ones
            head = nn.functional.normalize(model.task_head, dim=-1)
            tasks = torch.tensor([j for _, j in positives], device=device)
            loss = loss + nn.functional.cross_entropy(cfg.scale * p_emb @ head.T, tasks)
        total = loss + cfg.aux_weight * aux
        if teacher is not None and teacher_desc is not None:
            with torch.no_grad():
                if cfg.frozen_layers:
                    q_emb = teacher.encode_upper(p_in, p_mask, cfg.frozen_layers)
                else:
                    q_emb = teacher.encode_prompts(p_in, p_mask)
                d_emb = torch.stack([teacher_desc[t][v, j] for (t, j), v in zip(cand, styles, strict=True)])
            kd = _relational_kd(p_emb, q_emb, cfg.scale) + _relational_kd(t_emb, d_emb, cfg.scale)
            total = total + cfg.distill * kd
            distill_losses.append(float(kd.detach()))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        aux_losses.append(float(aux.detach()))
        bar.update(1)
        shown = {"loss": f"{np.mean(losses[-20:]):.3f}", "aux": f"{np.mean(aux_losses[-20:]):.3f}"}
        if distill_losses:
            shown["kd"] = f"{np.mean(distill_losses[-20:]):.4f}"
        bar.set_postfix(shown)

        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            stop = torch.zeros(1)
            if rank == 0:
                val = _validate(model, lower, val_rows, heads)
                mean = float(np.mean(list(val.values())))
                elapsed = time.perf_counter() - started
                history.append(
                    {
                        "step": step,
                        "loss": float(np.mean(losses[-cfg.eval_every :])),
                        "val": val,
                        "val_mean": mean,
                        "seconds": round(elapsed, 1),
                    }
                )
                bar.write(
                    f"step {step}: loss {history[-1]['loss']:.3f}  val {mean:.4f}  "
                    + "  ".join(f"{k} {v:.3f}" for k, v in val.items())
                )
                if mean > best_score:
                    best_score, best_step, stale = mean, step, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
                stop[0] = float(stale >= cfg.patience)
                if cfg.refresh_hard:
                    sampler.hard = _hard_negatives(
                        _description_embeddings(model, lower, desc_rows), keep_hard
                    )
                if resume is not None:
                    save_point(step)
            if world > 1:
                dist.broadcast(stop, src=0)
            if stop.item():
                break
        if cfg.stop_after and step - first + 1 >= cfg.stop_after and step < cfg.max_steps:
            interrupted = True
            if resume is not None and step % cfg.eval_every:
                save_point(step)
            break
    bar.close()
    summary: dict[str, Any] = {}
    seconds = time.perf_counter() - started
    done = step - first + 1
    throughput = {  # this call's steps, evaluations included
        "steps_per_second": round(done / seconds, 3) if done else None,
        "prompts_per_second": round(done * cfg.batch_size / seconds, 1) if done else None,
    }
    if rank == 0 and interrupted:  # the run goes on in a later call: nothing final to choose yet
        summary = {"steps": step, "finished": False, "history": history, **throughput}
    elif rank == 0:
        assert best_state is not None
        if cfg.keep_best:
            model.load_state_dict(best_state)
        model.eval()
        if cfg.task_head:
            # From here on the head is what a loaded checkpoint holds: learned vectors that
            # `describe` puts in place of those descriptions (evaluation below, saving, serving).
            vectors = nn.functional.normalize(model.task_head.detach().float().cpu(), dim=-1)
            model.learned_tasks = dict(
                zip((t.description for t in train_sets[0].tasks), vectors, strict=True)
            )
            del model.task_head
            if cfg.nearest_examples:
                model.learned_examples = learn_examples(model, tokenizer, train_sets[0])
        open_set_level = None
        if cfg.open_set:
            open_set_level = round(float(model.open_set_level.detach()), 4)
            del model.open_set_level
        threshold, how = pick_threshold(
            [score(model, tokenizer, t, "val", limit=cfg.val_limit, seed=cfg.seed) for t in val_sets]
        )
        summary = {
            "steps": step,
            "finished": True,
            "best_step": best_step,
            "best_val_mean": best_score,
            "history": history,
            "threshold": threshold,
            "threshold_source": how,
            "open_set_level": open_set_level,
            "seconds": round(seconds, 1),
            **throughput,
            "trainable_parameters": sum(p.numel() for p in trainable),
            "expert_usage": [m.last_counts.tolist() for m in model.moe_layers if m.last_counts is not None],
        }
    if world > 1:
        dist.barrier()
    return model, tokenizer, summary


def _open_set_loss(
    logits: torch.Tensor, target: torch.Tensor, level: torch.Tensor, weight: float
) -> torch.Tensor:
    """Cross-entropy over the candidates plus a "no task" column at `level` (scaled like the logits):
    with the positive present it must win; with it removed (as if the taxonomy lacked that task) the
    no-task column must, weighted `weight`."""
    rows = torch.arange(len(target), device=logits.device)
    no_task = level.reshape(1, 1).expand(len(target), 1)
    present = torch.cat([logits, no_task], dim=1)
    absent = torch.cat(
        [logits.index_put((rows, target), torch.tensor(float("-inf"), device=logits.device)), no_task], dim=1
    )
    nothing = torch.full_like(target, logits.shape[1])
    return nn.functional.cross_entropy(present, target) + weight * nn.functional.cross_entropy(
        absent, nothing
    )


def _frozen_copy(model: TaskClassifier) -> TaskClassifier:
    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def _teacher_descriptions(
    teacher: TaskClassifier, lower: _Lower, desc_rows: list[list[list[list[int]]]]
) -> list[torch.Tensor]:
    """The teacher's embedding of each task's description and name: per taxonomy [style, task, D] on
    the training device, from the same cached lower-layer states the student reads."""
    return [
        torch.stack([_embed_rows(teacher, lower, [r[v] for r in rows]) for v in range(2)]).to(lower.device)
        for rows in desc_rows
    ]


def _relational_kd(student: torch.Tensor, teacher: torch.Tensor, scale: float) -> torch.Tensor:
    """KL(teacher || student) of each row's softmax over its similarities to the other rows
    (the diagonal left out), at the contrastive scale; 0 for fewer than 3 rows."""
    n = student.shape[0]
    if n < 3:
        return student.sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=student.device)
    s = (scale * student @ student.T)[off].view(n, n - 1)
    t = (scale * teacher @ teacher.T)[off].view(n, n - 1)
    return nn.functional.kl_div(
        nn.functional.log_softmax(s, dim=-1),
        nn.functional.log_softmax(t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )


def _resumable_config(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a run must keep to be continued (not how long one call runs or shows progress)."""
    return {k: v for k, v in cfg.__dict__.items() if k not in ("stop_after", "progress", "device", "extra")}


def learn_examples(
    model: TaskClassifier, tokenizer: PreTrainedTokenizerBase, taxonomy: Taxonomy
) -> dict[str, torch.Tensor]:
    """The taxonomy's train-split prompts embedded by `model` ([n, D] per task description): the
    learned examples a retrained checkpoint keeps (`TaskClassifier.learned_examples`)."""
    rows = ensure_val_split(taxonomy).rows("train", with_fallback=False)
    vectors = embed(model, tokenizer, [r.messages for r in rows]).float().cpu()
    labels = np.array([r.label for r in rows])
    return {
        task.description: vectors[torch.from_numpy(np.flatnonzero(labels == task.name))]
        for task in taxonomy.tasks
        if (labels == task.name).any()
    }
