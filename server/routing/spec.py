"""Router definitions: parsed and validated in full at create/load time, never mid-request.

The accepted shape is the one operators know from hosted inference routers:

    name: support
    description: ...
    context: latest_turn           # optional: latest_turn or conversation (models/prompt.py)
    criterion: calibrated          # optional: calibrated or similarity (models/nomatch.py)
    threshold: 0.9                 # optional no-match threshold, in the criterion's units
    max_cost_usd: 0.01             # optional: skip candidates whose estimated cost exceeds it
    fallback_examples: [...]       # optional prompts that must match no task (fit the threshold)
    policies:
      - custom_task: {name: classify, description: ..., examples: [...]}
        models: [model-a, model-b]  # 1 to 3, from the catalog
        selection_policy: {prefer: cheapest}   # or fastest; omit for list order
    fallback_models: [model-c]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.nomatch import CALIBRATED, CRITERIA, SIMILARITY
from models.prompt import CONTEXT_MODES
from server.errors import InvalidInput
from server.routing.policies import PREFERENCES
from server.targets import Catalog

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
FALLBACK = "fallback"
MAX_MODELS = 3
MAX_TASKS = 256
MAX_EXAMPLES = 64
MAX_TEXT_CHARS = 4000
ROUTER_FILE_SUFFIXES = (".yaml", ".yml", ".json")

_ROUTER_KEYS = {
    "name",
    "description",
    "policies",
    "fallback_models",
    "threshold",
    "max_cost_usd",
    "context",
    "criterion",
    "fallback_examples",
}
# Threshold ranges per criterion: cosines live in [-1, 1]; calibrated values are standard
# deviations above what unrelated traffic finds, where in-scope prompts sit at about 0 to 6.
THRESHOLD_RANGES = {SIMILARITY: (-1.0, 1.0), CALIBRATED: (-10.0, 20.0)}
_POLICY_KEYS = {"custom_task", "models", "selection_policy"}
_TASK_KEYS = {"name", "description", "examples"}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    examples: tuple[str, ...]
    models: tuple[str, ...]
    prefer: str | None  # None = manual ranking by list order


@dataclass(frozen=True)
class RouterSpec:
    name: str
    description: str
    tasks: tuple[TaskSpec, ...]
    fallback_models: tuple[str, ...]
    threshold: float | None
    max_cost_usd: float | None = None  # per-request cap on a candidate's estimated cost
    context: str | None = None  # None: the checkpoint's
    # None: the checkpoint's, or "similarity" when a threshold is set without a criterion (the
    # units router definitions used before criteria existed, so old definitions keep their meaning).
    criterion: str | None = None
    fallback_examples: tuple[str, ...] = ()

    def resolved_criterion(self, default: str) -> str:
        if self.criterion is not None:
            return self.criterion
        return SIMILARITY if self.threshold is not None else default

    def to_dict(self) -> dict[str, Any]:
        """The definition in operator format (what a YAML file or Router message holds)."""
        policies = []
        for task in self.tasks:
            custom: dict[str, Any] = {"name": task.name, "description": task.description}
            if task.examples:
                custom["examples"] = list(task.examples)
            policy: dict[str, Any] = {"custom_task": custom, "models": list(task.models)}
            if task.prefer is not None:
                policy["selection_policy"] = {"prefer": task.prefer}
            policies.append(policy)
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "policies": policies,
            "fallback_models": list(self.fallback_models),
        }
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.max_cost_usd is not None:
            out["max_cost_usd"] = self.max_cost_usd
        if self.context is not None:
            out["context"] = self.context
        if self.criterion is not None:
            out["criterion"] = self.criterion
        if self.fallback_examples:
            out["fallback_examples"] = list(self.fallback_examples)
        return out


class _Checker:
    """Collects the location of a value for error messages ("policies[1].models")."""

    def __init__(self, router: str) -> None:
        self.router = router

    def fail(self, where: str, problem: str) -> InvalidInput:
        return InvalidInput(f"router {self.router!r}: {where} {problem}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(
                where, f"must be a mapping with keys {sorted(allowed)}, got {type(value).__name__}"
            )
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(where, f"has unknown keys {unknown}; allowed: {sorted(allowed)}")
        return value

    def text(self, value: Any, where: str, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(where, "must be a non-empty string")
        if len(value) > MAX_TEXT_CHARS:
            raise self.fail(where, f"is {len(value)} characters; at most {MAX_TEXT_CHARS} allowed")
        return value.strip()

    def prompts(self, value: Any, where: str) -> tuple[str, ...]:
        value = value or []
        if not isinstance(value, list) or len(value) > MAX_EXAMPLES:
            raise self.fail(where, f"must be a list of at most {MAX_EXAMPLES} prompts")
        return tuple(self.text(e, f"{where}[{i}]") for i, e in enumerate(value))

    def choice(self, value: Any, where: str, allowed: tuple[str, ...]) -> str | None:
        if value is None or value == "":
            return None
        if value not in allowed:
            raise self.fail(where, f"is {value!r}; allowed: {', '.join(allowed)} (or omit it)")
        return str(value)

    def name(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise self.fail(where, f"{value!r} is not a valid name; use {NAME_RULE}")
        return value

    def models(self, value: Any, where: str, catalog: Catalog) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, f"must list 1 to {MAX_MODELS} models")
        if len(value) > MAX_MODELS:
            raise self.fail(where, f"lists {len(value)} models; at most {MAX_MODELS} allowed")
        for model in value:
            if model not in catalog.models:
                raise self.fail(where, f"names unknown model {model!r}; known: {catalog.known()}")
        if len(set(value)) != len(value):
            raise self.fail(where, f"lists a model twice: {value}")
        return tuple(value)


def _parse_task(checker: _Checker, policy: Any, where: str, catalog: Catalog) -> TaskSpec:
    policy = checker.mapping(policy, where, _POLICY_KEYS)
    custom = checker.mapping(policy.get("custom_task"), f"{where}.custom_task", _TASK_KEYS)
    name = checker.name(custom.get("name"), f"{where}.custom_task.name")
    if name == FALLBACK:
        raise checker.fail(f"{where}.custom_task.name", f"'{FALLBACK}' is reserved for the no-match answer")
    description = checker.text(custom.get("description"), f"{where}.custom_task.description")
    examples = checker.prompts(custom.get("examples"), f"{where}.custom_task.examples")
    models = checker.models(policy.get("models"), f"{where}.models", catalog)
    prefer = None
    if policy.get("selection_policy") is not None:
        selection = checker.mapping(policy["selection_policy"], f"{where}.selection_policy", {"prefer"})
        prefer = selection.get("prefer")
        if prefer not in PREFERENCES:
            # gRPC sends an unset or empty string as absent: say so rather than "is None".
            given = "is missing or empty" if prefer in (None, "") else f"is {prefer!r}"
            raise checker.fail(
                f"{where}.selection_policy.prefer",
                f"{given}; allowed: {', '.join(PREFERENCES)} (omit selection_policy to rank by list order)",
            )
    return TaskSpec(name, description, examples, models, prefer)


def parse_router(raw: Any, catalog: Catalog) -> RouterSpec:
    """Validate a router definition in full; raise InvalidInput naming the first problem found."""
    label = raw.get("name") if isinstance(raw, Mapping) and isinstance(raw.get("name"), str) else "?"
    checker = _Checker(label)
    raw = checker.mapping(raw, "definition", _ROUTER_KEYS)
    name = checker.name(raw.get("name"), "name")
    description = checker.text(raw.get("description"), "description", required=False)
    policies = raw.get("policies")
    if not isinstance(policies, list) or not policies:
        raise checker.fail("policies", "must list at least one task (custom_task + models)")
    if len(policies) > MAX_TASKS:
        raise checker.fail("policies", f"lists {len(policies)} tasks; at most {MAX_TASKS} allowed")
    tasks = tuple(_parse_task(checker, p, f"policies[{i}]", catalog) for i, p in enumerate(policies))
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        if task.name in seen:
            raise checker.fail(f"policies[{i}].custom_task.name", f"duplicates task name {task.name!r}")
        seen.add(task.name)
    if not raw.get("fallback_models"):
        raise checker.fail("fallback_models", "is missing; list 1 to 3 models for prompts that match no task")
    fallback = checker.models(raw.get("fallback_models"), "fallback_models", catalog)
    context = checker.choice(raw.get("context"), "context", CONTEXT_MODES)
    criterion = checker.choice(raw.get("criterion"), "criterion", CRITERIA)
    threshold = raw.get("threshold")
    if threshold is not None:
        low, high = THRESHOLD_RANGES[criterion or SIMILARITY]
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
            or not low <= threshold <= high
        ):
            units = f"criterion {criterion!r}" if criterion else "similarity units (no criterion set)"
            raise checker.fail(
                "threshold", f"is {threshold!r}; use a number in [{low:g}, {high:g}] ({units}) or omit it"
            )
        threshold = float(threshold)
    fallback_examples = checker.prompts(raw.get("fallback_examples"), "fallback_examples")
    max_cost = raw.get("max_cost_usd")
    if max_cost is not None:
        if (
            isinstance(max_cost, bool)
            or not isinstance(max_cost, int | float)
            or not math.isfinite(max_cost)
            or max_cost <= 0
        ):
            raise checker.fail("max_cost_usd", f"is {max_cost!r}; use a positive number of USD or omit it")
        max_cost = float(max_cost)
    return RouterSpec(
        name, description, tasks, fallback, threshold, max_cost, context, criterion, fallback_examples
    )


def read_router_file(path: Path, catalog: Catalog) -> RouterSpec:
    """Parse one YAML or JSON router file; errors name the file."""
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return parse_router(raw, catalog)
    except (InvalidInput, ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: {exc}") from exc


def load_router_dir(directory: Path, catalog: Catalog) -> list[RouterSpec]:
    """All router files in `directory`, sorted by file name; two files may not define one name."""
    if not directory.is_dir():
        raise InvalidInput(f"routers directory {directory} does not exist")
    specs: dict[str, tuple[Path, RouterSpec]] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in ROUTER_FILE_SUFFIXES):
        spec = read_router_file(path, catalog)
        if spec.name in specs:
            raise InvalidInput(f"{path}: router {spec.name!r} is already defined in {specs[spec.name][0]}")
        specs[spec.name] = (path, spec)
    return [spec for _, spec in specs.values()]
