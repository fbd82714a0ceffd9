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

`RouterStore` is what the registry needs of any store; server/routing/redis_store.py is the other one,
shared by every replica.
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
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server.errors import InvalidInput, PersistFailed
from server.routing.spec import RouterSpec, parse_router
from server.targets import Catalog

log = logging.getLogger(__name__)

FORMAT = 1
# How often a waiting writer retries the lock: short next to a save (a write and two fsyncs).
_LOCK_POLL_S = 0.005
# How often a process looks for a set another one saved: within 1 s of any change.
FOLLOW_INTERVAL_S = 0.5

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


class Conflict(Exception):
    """The store moved past the version a change started from (another replica wrote first): the
    registry reloads and tries the change again."""


Token = object  # which version of a store's set a process holds: a file Stamp, a Redis revision


class RouterStore(Protocol):
    """Where the router set lives when it outlives the process: a file (one server, its workers) or
    Redis (every replica). The registry changes it with read-modify-write: `transaction`, then
    `read_if_changed`, then `save` with the version the change started from."""

    where: str  # for messages: "router state file /x", "Redis at redis://..."

    async def open(self, seed: Sequence[RouterSpec]) -> tuple[list[SavedRouter], Token]:
        """The stored set and its version; stores `seed` (new uuids, version 1) when it never was."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Around one change: a lock where the store has one, nothing where `save` compares-and-sets."""
        ...

    async def read_if_changed(self, token: Token) -> tuple[list[SavedRouter], Token] | None:
        """The stored set when its version is not `token`, else None."""
        ...

    async def save(self, routers: list[SavedRouter], token: Token) -> Token:
        """Store the set if the store is still at `token` (else Conflict); the new version."""
        ...

    def changes(self) -> AsyncIterator[None]:
        """Yields whenever the set may have changed elsewhere (and now and then regardless)."""
        ...

    async def close(self) -> None: ...


def seeded(specs: Sequence[RouterSpec]) -> list[SavedRouter]:
    now = time.time()
    return [SavedRouter(spec, str(uuid.uuid4()), 1, now, now) for spec in specs]


def encode_document(routers: Sequence[SavedRouter]) -> bytes:
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
    return json.dumps(document, indent=1).encode()


def decode_document(data: bytes | str, catalog: Catalog, where: str) -> list[SavedRouter]:
    """The routers of a stored document, every definition validated as an API call would be."""
    try:
        raw = json.loads(data)
        if raw.get("format") != FORMAT:
            raise ValueError(f"unknown format {raw.get('format')!r}; this version reads {FORMAT}")
        return [_entry(entry, catalog) for entry in raw["routers"]]
    except (InvalidInput, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{where}: {exc}") from exc


def _entry(entry: dict[str, Any], catalog: Catalog) -> SavedRouter:
    spec = parse_router(entry["definition"], catalog)  # rejects NaN/inf thresholds and caps
    times = {}
    for field in ("create_time", "update_time"):
        value = float(entry[field])
        if not math.isfinite(value):
            raise ValueError(f"router {spec.name!r}: {field} is {entry[field]!r}; a finite number")
        times[field] = value
    return SavedRouter(spec=spec, uuid=str(entry["uuid"]), version=int(entry["version"]), **times)


class RouterState:
    """The file store: `routers.state_file`, shared by the workers of one server."""

    def __init__(self, path: Path, catalog: Catalog, poll_s: float = FOLLOW_INTERVAL_S) -> None:
        self.path = path
        self.catalog = catalog
        self.where = f"router state file {path}"
        self._poll_s = poll_s

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Hold the file's exclusive lock, across processes (flock on the sibling lock file).

        Polled with LOCK_NB instead of a blocking flock in a thread: a caller cancelled while it waits
        then leaves nothing behind that could take the lock later and never give it back."""
        failed = f"could not save routers to {self.path}: cannot lock {self.lock_path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PersistFailed(f"{failed}: {exc}; nothing was changed") from exc
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        raise PersistFailed(f"{failed}: {exc}; nothing was changed") from exc
                    await asyncio.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    async def open(self, seed: Sequence[RouterSpec]) -> tuple[list[SavedRouter], Token]:
        """Workers starting together seed the file once; the file is rewritten at once either way,
        which proves it writable before the server says SERVING."""
        async with self.transaction():
            saved = await asyncio.to_thread(self.load)  # also clears a crash's strays, under the lock
            if saved is None:
                saved = seeded(seed)
            else:
                log.info("routers restored from %s", self.path)
            return saved, await asyncio.to_thread(self.write, saved)

    async def read_if_changed(self, token: Token) -> tuple[list[SavedRouter], Token] | None:
        if self.stamp() == token:
            return None
        saved, stamp = await asyncio.to_thread(self.read)
        return None if saved is None else (saved, stamp)  # a deleted file never deletes the live set

    async def save(self, routers: list[SavedRouter], token: Token) -> Token:
        # Under `transaction` the file cannot have moved since read_if_changed: no Conflict here.
        return await asyncio.to_thread(self.write, routers)  # a write and two fsyncs: off the event loop

    async def changes(self) -> AsyncIterator[None]:
        while True:
            await asyncio.sleep(self._poll_s)
            yield  # read_if_changed compares the stamp: one stat per poll when nothing changed

    async def close(self) -> None:
        return None

    def stamp(self) -> Stamp:
        """The version of the file now; None when it is missing or unreadable."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def clear_strays(self) -> None:
        """Remove temporary files left by a crash mid-write. Only under `transaction` when other
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
                data = file.read()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise InvalidInput(f"{self.where}: {exc}") from exc
        return decode_document(data, self.catalog, self.where), (st.st_ino, st.st_mtime_ns, st.st_size)

    def write(self, routers: list[SavedRouter]) -> Stamp:
        """Write the whole set; returns the new file's stamp. Call under `transaction` when other
        processes share the file, so the stamp is of this write and not of a later one."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, encode_document(routers))
        except OSError as exc:
            raise PersistFailed(f"could not save routers to {self.path}: {exc}; nothing was changed") from exc
        return self.stamp()
