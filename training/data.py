"""Labelled prompt sets: loading, splitting and turning rows into encoder input.

A *taxonomy* is one set of tasks (names + descriptions, optional examples) with labelled prompts.
Sources: the public sets in ../shared/data (read in place, never copied), the project's own LLM
task-type prompts (training/data/llm_task_types), or any task file + labelled JSONL a user brings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from models import ChatMessage

FALLBACK = "fallback"
SPLITS = ("train", "val", "test")
PROJECT_DATA = Path(__file__).resolve().parent / "data"
# ../shared/data beside the checkout; TASKROUTER_SHARED_DATA points elsewhere (e.g. on a GPU machine
# that received a bundle of it, scripts/gpu_check.sh).
SHARED_DATA = Path(
    os.environ.get("TASKROUTER_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Example:
    messages: tuple[ChatMessage, ...]
    label: str  # a task name, or FALLBACK
    split: str

    @property
    def text(self) -> str:
        return "\n".join(m.content for m in self.messages)


@dataclass
class Taxonomy:
    name: str
    tasks: list[Task]
    examples: list[Example] = field(default_factory=list)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def rows(self, split: str, with_fallback: bool = True) -> list[Example]:
        return [e for e in self.examples if e.split == split and (with_fallback or e.label != FALLBACK)]

    def has_split(self, split: str) -> bool:
        return any(e.split == split for e in self.examples)


def _hash_split(key: str, val_share: float, test_share: float) -> str:
    """A fixed split from the text itself, so it never changes between runs or machines."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < test_share:
        return "test"
    if bucket < test_share + val_share:
        return "val"
    return "train"


def _messages(row: dict) -> tuple[ChatMessage, ...]:
    if "messages" in row:
        return tuple(ChatMessage(m["role"], m["content"]) for m in row["messages"])
    return (ChatMessage("user", row["text"]),)


def read_tasks(path: Path) -> list[Task]:
    """A task file: JSON or YAML list of {name, description, examples?}."""
    raw = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty list of {{name, description, examples?}}")
    tasks = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not item.get("name") or not item.get("description"):
            raise ValueError(f"{path}: entry {i} needs a name and a description")
        tasks.append(Task(item["name"], item["description"], tuple(item.get("examples") or ())))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names) or FALLBACK in names:
        raise ValueError(f"{path}: task names must be unique and not '{FALLBACK}'")
    return tasks


def read_labelled(
    path: Path, known: Iterable[str], val_share: float = 0.1, test_share: float = 0.0
) -> list[Example]:
    """JSONL rows {"text" | "messages", "label", "split"?}; rows without a split get a hash split."""
    allowed = set(known) | {FALLBACK}
    rows = []
    # split("\n"), not splitlines(): texts may hold U+2028 and friends, which JSON leaves unescaped.
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("label") not in allowed:
            raise ValueError(
                f"{path}:{number}: label {row.get('label')!r} is not a task name or '{FALLBACK}'"
            )
        messages = _messages(row)
        split = row.get("split") or _hash_split(json.dumps(row, sort_keys=True), val_share, test_share)
        if split not in SPLITS:
            raise ValueError(f"{path}:{number}: split {split!r}; allowed: {', '.join(SPLITS)}")
        rows.append(Example(messages, row["label"], split))
    return rows


def load_dataset_dir(directory: Path, name: str | None = None) -> Taxonomy:
    """A folder with tasks.json + examples.jsonl (the layout of ../shared/data/*)."""
    tasks = read_tasks(directory / "tasks.json")
    examples = read_labelled(directory / "examples.jsonl", [t.name for t in tasks])
    return Taxonomy(name or directory.name, tasks, examples)


def load_project_set() -> Taxonomy:
    """The project's own LLM task-type prompts (all part*.jsonl files), split 70/15/15 by hash."""
    directory = PROJECT_DATA / "llm_task_types"
    tasks = read_tasks(directory / "tasks.json")
    examples: list[Example] = []
    for part in sorted(directory.glob("part*.jsonl")):
        examples += read_labelled(part, [t.name for t in tasks], val_share=0.15, test_share=0.15)
    return Taxonomy("llm_task_types", tasks, examples)


def load_taxonomies(names: Sequence[str], shared: Path = SHARED_DATA) -> list[Taxonomy]:
    """By name: 'llm_task_types' is the project's set; anything else is a folder under `shared`
    (or a path to such a folder)."""
    out = []
    for name in names:
        if name == "llm_task_types":
            out.append(load_project_set())
        else:
            path = Path(name) if Path(name).is_dir() else shared / name
            if not (path / "tasks.json").is_file():
                raise ValueError(f"no data set {name!r} (looked in {path})")
            out.append(load_dataset_dir(path))
    return out


def ensure_val_split(taxonomy: Taxonomy, share: float = 0.1) -> Taxonomy:
    """Sets without a val split (banking77, snips) lend `share` of their train rows to val."""
    if taxonomy.has_split("val"):
        return taxonomy
    examples = [
        Example(
            e.messages,
            e.label,
            "val" if e.split == "train" and _hash_split(e.text, share, 0) == "val" else e.split,
        )
        for e in taxonomy.examples
    ]
    return Taxonomy(taxonomy.name, taxonomy.tasks, examples)
