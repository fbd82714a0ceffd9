"""Metrics of several worker processes answered by any one of them (`server.workers > 1`).

Each worker keeps its own registry (a process's counters cannot be shared without a different client
mode that must be chosen before import and cannot read live gauges). Instead every worker writes its
exposition to `<dir>/<pid>.prom` about once a second and whenever it is scraped. A scrape reads every
worker's file and answers all of them, each series labelled `worker="<pid>"`, so
`sum without (worker) (...)` is the service's total. Another worker's numbers are at most about a
second old. The console's recent traffic (server/telemetry/recent.py) travels the same way, in
`<dir>/<pid>.recent.json`, rewritten at most every RECENT_EVERY_S (a day of minutes is larger than an
exposition); the console's Analyze merges every worker's, as a scrape does.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

SUFFIX = ".prom"
RECENT_SUFFIX = ".recent.json"
RECENT_EVERY_S = 5.0


class SharedMetrics:
    def __init__(
        self,
        directory: Path,
        registry: CollectorRegistry,
        recent: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.directory = directory
        self.registry = registry
        self.worker = str(os.getpid())
        self.path = directory / f"{self.worker}{SUFFIX}"
        self.recent_path = directory / f"{self.worker}{RECENT_SUFFIX}"
        self._recent = recent
        self._recent_at = 0.0
        directory.mkdir(parents=True, exist_ok=True)

    def publish(self) -> None:
        """Replace this worker's file atomically (a reader never sees half of it); the recent traffic too,
        when RECENT_EVERY_S has passed."""
        staging = self.path.with_suffix(".tmp")
        staging.write_bytes(generate_latest(self.registry))
        staging.replace(self.path)
        now = time.monotonic()
        if self._recent is not None and now - self._recent_at >= RECENT_EVERY_S:
            self._recent_at = now
            staging = self.recent_path.with_suffix(".tmp")
            staging.write_text(json.dumps(self._recent()))
            staging.replace(self.recent_path)

    def others_recent(self) -> list[list[dict[str, Any]]]:
        """The other workers' recent traffic, as they last published it."""
        out = []
        for path in sorted(self.directory.glob(f"*{RECENT_SUFFIX}")):
            if path == self.recent_path:
                continue
            try:
                out.append(json.loads(path.read_text()))
            except (FileNotFoundError, ValueError):  # its worker stopped, or the file is being replaced
                continue
        return out

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
        self.recent_path.unlink(missing_ok=True)


class _Merged:
    def __init__(self, families: dict[str, Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families.values()
