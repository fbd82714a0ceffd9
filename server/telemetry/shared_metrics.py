"""Metrics of several worker processes answered by any one of them (`server.workers > 1`).

Each worker keeps its own registry (a process's counters cannot be shared without a different client
mode that must be chosen before import and cannot read live gauges). Instead every worker writes its
exposition to `<dir>/<pid>.prom` about once a second and whenever it is scraped. A scrape reads every
worker's file and answers all of them, each series labelled `worker="<pid>"`, so
`sum without (worker) (...)` is the service's total. Another worker's numbers are at most about a
second old.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

SUFFIX = ".prom"


class SharedMetrics:
    def __init__(self, directory: Path, registry: CollectorRegistry) -> None:
        self.directory = directory
        self.registry = registry
        self.worker = str(os.getpid())
        self.path = directory / f"{self.worker}{SUFFIX}"
        directory.mkdir(parents=True, exist_ok=True)

    def publish(self) -> None:
        """Replace this worker's file atomically (a reader never sees half of it)."""
        staging = self.path.with_suffix(".tmp")
        staging.write_bytes(generate_latest(self.registry))
        staging.replace(self.path)

    def render(self) -> bytes:
        self.publish()
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_Merged(self._families()))
        return generate_latest(merged)

    def _families(self) -> dict[str, Metric]:
        families: dict[str, Metric] = {}
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            worker = path.name[: -len(SUFFIX)]
            try:
                text = path.read_text()
            except FileNotFoundError:  # its worker stopped between the glob and the read
                continue
            for family in text_string_to_metric_families(text):
                into = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type, family.unit)
                )
                into.samples += [s._replace(labels={**s.labels, "worker": worker}) for s in family.samples]
        return families

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class _Merged:
    def __init__(self, families: dict[str, Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families.values()
