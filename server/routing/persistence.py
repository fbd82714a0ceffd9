"""Routers made over the APIs survive restarts: after every change the whole live set is written to one
JSON file (`routers.state_file`), atomically, and read back at start.

Atomic means a reader (the next start) sees the old file or the new one, never a mix: the new content
goes to a temporary file in the same directory, is flushed to disk, and replaces the old file with one
rename; the directory is flushed too, so the rename itself survives a power cut. A crash mid-write
leaves at most a stray temporary file, which the next write ignores and the next start removes.

One file for the whole set, not one per router, because a rename (PUT with a new name) or a delete
then is still one atomic step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import InvalidInput, PersistFailed
from server.routing.spec import RouterSpec, parse_router
from server.targets import Catalog

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class SavedRouter:
    spec: RouterSpec
    uuid: str
    version: int
    create_time: float
    update_time: float


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that any reader sees the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename is a change to the directory: make it durable too
    finally:
        os.close(directory)


class RouterState:
    def __init__(self, path: Path, catalog: Catalog) -> None:
        self.path = path
        self.catalog = catalog

    def load(self) -> list[SavedRouter] | None:
        """The saved routers, or None when nothing was saved yet; a damaged file stops start-up with
        a message naming it (it is never silently replaced)."""
        for stray in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stray.unlink(missing_ok=True)  # left by a crash mid-write; the real file is intact
        if not self.path.is_file():
            return None
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("format") != FORMAT:
                raise ValueError(f"unknown format {raw.get('format')!r}; this version reads {FORMAT}")
            return [self._entry(entry) for entry in raw["routers"]]
        except (InvalidInput, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"router state file {self.path}: {exc}") from exc

    def _entry(self, entry: dict[str, Any]) -> SavedRouter:
        spec = parse_router(entry["definition"], self.catalog)  # rejects NaN/inf thresholds and caps
        times = {}
        for field in ("create_time", "update_time"):
            value = float(entry[field])
            if not math.isfinite(value):
                raise ValueError(f"router {spec.name!r}: {field} is {entry[field]!r}; a finite number")
            times[field] = value
        return SavedRouter(spec=spec, uuid=str(entry["uuid"]), version=int(entry["version"]), **times)

    def save(self, routers: list[SavedRouter]) -> None:
        document: dict[str, Any] = {
            "format": FORMAT,
            "routers": [
                {
                    "uuid": r.uuid,
                    "version": r.version,
                    "create_time": r.create_time,
                    "update_time": r.update_time,
                    "definition": r.spec.to_dict(),
                }
                for r in routers
            ],
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(document, indent=1).encode())
        except OSError as exc:
            raise PersistFailed(f"could not save routers to {self.path}: {exc}; nothing was changed") from exc
