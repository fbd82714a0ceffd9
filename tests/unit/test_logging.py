"""The service's log: what it hides (per-request httpx lines) and what it keeps."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from server.main import configure_logging


@pytest.fixture
def restore() -> Iterator[None]:
    root, httpx_log = logging.getLogger(), logging.getLogger("httpx")
    levels, handlers = (root.level, httpx_log.level), list(root.handlers)
    yield
    root.setLevel(levels[0])
    httpx_log.setLevel(levels[1])
    root.handlers[:] = handlers


def test_httpx_request_lines_are_hidden_at_info_and_shown_at_debug(restore: None) -> None:
    logging.getLogger().handlers[:] = []  # basicConfig only configures a bare root
    configure_logging("INFO")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)  # a health probe per endpoint per 5 s
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    assert logging.getLogger("server.routing.registry").isEnabledFor(logging.INFO)  # router changes stay
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    logging.getLogger().handlers[:] = []
    configure_logging("DEBUG")
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)  # asked for everything: gets it
