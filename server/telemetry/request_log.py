"""The optional request log: one JSON object per line, one line per request, appended to a file that
`taskrouter-analyze` turns into a report.

Each line is written with a single `write` on an O_APPEND descriptor, so worker processes sharing the
file never interleave partial lines, and `logrotate`'s copytruncate works without a reopen. Prompt text
is left out unless the operator turns it on (telemetry.log_prompts): a log of metadata can be kept and
shared where customers' prompts cannot.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RequestLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._warned = False

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            return
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        try:
            os.write(self._fd, line)
        except OSError as exc:  # a full disk must not fail requests; say so once
            if not self._warned:
                self._warned = True
                log.error("request log %s: write failed (%s); requests go on unlogged", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
