"""Reading a request's JSON body, with the same answer everywhere when it is not JSON."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from server.errors import InvalidInput


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have; a NaN cost cap once passed
    # every comparison and was stored, breaking every later read of the router set.
    raise ValueError(f"{name} is not a JSON number; send a finite number")


# No request here nests deeper than a few levels (a router definition is about 5); far deeper is
# an attack on whatever walks it next (recursive copies, encoders).
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


async def json_body(request: Request) -> Any:
    """The parsed body; InvalidInput (400) naming the problem when it is not valid JSON: not UTF-8,
    malformed, nested deeper than the parser goes, or holding NaN/Infinity."""
    raw = await request.body()
    too_deep = InvalidInput(f"the body nests objects and arrays more than {MAX_DEPTH} levels deep")
    try:
        parsed = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)  # JSON on the wire is UTF-8
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
    if _depth(parsed) > MAX_DEPTH:
        raise too_deep
    return parsed
