"""Selection policies: order a task's model pool by price, speed, or the operator's list order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

PREFERENCES = ("cheapest", "fastest")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_price_per_mtok: float
    output_price_per_mtok: float
    latency_ms: float

    @property
    def blended_price_per_mtok(self) -> float:
        """Price of a typical request mix: three input tokens for every output token."""
        return (3.0 * self.input_price_per_mtok + self.output_price_per_mtok) / 4.0


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, ModelInfo]

    def known(self) -> str:
        return ", ".join(sorted(self.models))


def load_catalog(path: Path) -> Catalog:
    """Read the model catalog YAML ({models: {name: {input_price_per_mtok, ...}}})."""
    raw = yaml.safe_load(path.read_text()) or {}
    entries = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise ValueError(
            f"{path}: expected a non-empty 'models:' mapping of model name -> prices and latency"
        )
    models = {}
    for name, info in entries.items():
        try:
            models[str(name)] = ModelInfo(name=str(name), **{k: float(v) for k, v in info.items()})
        except (TypeError, AttributeError, ValueError) as exc:
            raise ValueError(
                f"{path}: model {name!r} needs input_price_per_mtok, output_price_per_mtok and latency_ms "
                f"numbers ({exc})"
            ) from exc
    return Catalog(models=models)


def order_models(models: Sequence[str], prefer: str | None, catalog: Catalog) -> tuple[str, ...]:
    """The pool in the order to try it. Ties keep the operator's list order (the sort is stable)."""
    if prefer is None:
        return tuple(models)
    if prefer == "cheapest":
        return tuple(sorted(models, key=lambda m: catalog.models[m].blended_price_per_mtok))
    if prefer == "fastest":
        return tuple(sorted(models, key=lambda m: catalog.models[m].latency_ms))
    raise ValueError(f"unknown preference {prefer!r}; allowed: {', '.join(PREFERENCES)}")
