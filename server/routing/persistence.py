"""Routers made over the APIs survive restarts: after every change the whole live set is written to one
JSON file (`routers.state_file`), atomically, and read back at start.

Atomic means a reader (the next start) sees the old file or the new one, never a mix: the new content
goes to a temporary file in the same directory, is flushed to disk, and replaces the old file with one
rename; the directory is flushed too, so the rename itself survives a power cut. A crash mid-write
leaves at most a stray temporary file, which the next write ignores and the next start removes.

One file for the whole set, not one per router, because a rename (PUT with a new name) or a delete
then is still one atomic step.

The file is also how the workers of one server (`server.workers > 1`) share the router set: a change is
a read-modify-write under an exclusive lock on a sibling lock file (`locked`), so two workers changing
routers at once never lose each other's change, and every worker notices a new file by its stamp (inode,
mtime, size: each write is a new inode) and reloads it (`RouterRegistry.follow`).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import math
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import InvalidInput, PersistFailed
from server.routing.spec import RouterSpec, parse_router
from server.targets import Catalog

log = logging.getLogger(__name__)

FORMAT = 1
# How often a waiting writer retries the lock: short next to a save (a write and two fsyncs).
_LOCK_POLL_S = 0.005

# Which version of the file a worker holds: (inode, mtime in ns, size); None when there is no file.
Stamp = tuple[int, int, int] | None


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

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Hold the file's exclusive lock, across processes (flock on the sibling lock file).

        Polled with LOCK_NB instead of a blocking flock in a thread: a caller cancelled while it waits
        then leaves nothing behind that could take the lock later and never give it back."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PersistFailed(
                f"could not save routers to {self.path}: cannot lock {self.lock_path}: {exc}; "
                "nothing was changed"
            ) from exc
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        raise PersistFailed(
                            f"could not save routers to {self.path}: cannot lock {self.lock_path}: {exc}; "
                            "nothing was changed"
                        ) from exc
                    await asyncio.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def stamp(self) -> Stamp:
        """The version of the file now; None when it is missing or unreadable."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def clear_strays(self) -> None:
        """Remove temporary files left by a crash mid-write. Only under `locked` when other
        processes may be writing: their temporary file looks the same until its rename."""
        for stray in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stray.unlink(missing_ok=True)

    def load(self) -> list[SavedRouter] | None:
        """The saved routers, or None when nothing was saved yet; a damaged file stops start-up with
        a message naming it (it is never silently replaced)."""
        self.clear_strays()
        return self.read()[0]

    def read(self) -> tuple[list[SavedRouter] | None, Stamp]:
        """The saved routers (None: no file yet) and the stamp of the version read."""
        try:
            with open(self.path, "rb") as file:
                st = os.fstat(file.fileno())  # of the file actually read, even if it is replaced now
                raw = json.loads(file.read())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"router state file {self.path}: {exc}") from exc
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"unknown format {raw.get('format')!r}; this version reads {FORMAT}")
            routers = [self._entry(entry) for entry in raw["routers"]]
        except (InvalidInput, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"router state file {self.path}: {exc}") from exc
        return routers, (st.st_ino, st.st_mtime_ns, st.st_size)

    def _entry(self, entry: dict[str, Any]) -> SavedRouter:
        spec = parse_router(entry["definition"], self.catalog)  # rejects NaN/inf thresholds and caps
        times = {}
        for field in ("create_time", "update_time"):
            value = float(entry[field])
            if not math.isfinite(value):
                raise ValueError(f"router {spec.name!r}: {field} is {entry[field]!r}; a finite number")
            times[field] = value
        return SavedRouter(spec=spec, uuid=str(entry["uuid"]), version=int(entry["version"]), **times)

    def save(self, routers: list[SavedRouter]) -> Stamp:
        """Write the whole set; returns the new file's stamp. Call under `locked` when other
        processes share the file, so the stamp is of this write and not of a later one."""
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
        return self.stamp()
