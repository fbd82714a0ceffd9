"""Reading a request's JSON body, with the same answer everywhere when it is not JSON."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from server.errors import InvalidInput


async def json_body(request: Request) -> Any:
    """The parsed body; InvalidInput (400) naming the parse error when it is not valid JSON."""
    try:
        return await request.json()
    except ValueError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
