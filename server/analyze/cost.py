"""`taskrouter-analyze cost`: the monthly bill, routed vs one baseline model, per task.

    taskrouter-analyze cost requests.jsonl --baseline gpt-4o --router support --month
    taskrouter-analyze cost --baseline gpt-4o --volume classify=700000 --tokens classify=300:20 \\
        --model classify=gpt-4o-mini --volume qa=250000 --tokens qa=800:300 --model qa=gpt-4o-mini ...

Loads come from the log (served requests only: Chat and chat.completions calls that a model answered,
with their real token counts, per task and model) or are stated; stated values override measured ones
task by task (`--volume` for the month's requests, keeping the log's split across models and its
tokens; `--tokens IN:OUT` per request; `--model` the routed model). `--month` scales the log's
volumes from its time span to 30 days. The pricing itself is server/targets/cost.py, shared with the
console's Evaluate.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.targets.cost import Load
from server.telemetry import SERVED_APIS

MONTH_S = 30 * 86400.0


@dataclass(frozen=True)
class Stated:
    volume: dict[str, float]
    tokens: dict[str, tuple[float, float]]
    model: dict[str, str]


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        task, sep, rest = value.partition("=")
        if not sep or not task or not rest:
            raise ValueError(f"{flag} {value!r}: write TASK=VALUE")
        out[task] = rest
    return out


def parse_stated(volume: Sequence[str], tokens: Sequence[str], model: Sequence[str]) -> Stated:
    """The --volume / --tokens / --model flags; ValueError says which one is malformed and how."""
    volumes = {}
    for task, raw in _pairs(volume, "--volume").items():
        try:
            volumes[task] = float(raw.replace(",", "").replace("_", ""))
        except ValueError:
            raise ValueError(f"--volume {task}={raw!r}: a number of requests") from None
        if volumes[task] < 0:
            raise ValueError(f"--volume {task}={raw!r}: not negative")
    counts = {}
    for task, raw in _pairs(tokens, "--tokens").items():
        inp, sep, out = raw.partition(":")
        try:
            counts[task] = (float(inp), float(out))
        except ValueError:
            raise ValueError(f"--tokens {task}={raw!r}: write INPUT:OUTPUT tokens per request") from None
        if not sep or min(counts[task]) < 0:
            raise ValueError(f"--tokens {task}={raw!r}: write INPUT:OUTPUT tokens per request")
    return Stated(volumes, counts, _pairs(model, "--model"))


def measured_loads(records: Sequence[dict[str, Any]]) -> list[Load]:
    """Per task and answering model: served requests with token counts, and their mean tokens. A task is
    named `router/task` when the records span several routers."""
    served = [
        r
        for r in records
        if r["api"] in SERVED_APIS
        and r["outcome"] == "OK"
        and r.get("model")
        and r.get("task")
        and r.get("prompt_tokens") is not None
        and not r.get("cost_estimated")
    ]
    several = len({r.get("router") for r in served}) > 1
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in served:
        task = f"{r['router']}/{r['task']}" if several else r["task"]
        groups.setdefault((task, r["model"]), []).append(r)
    return [
        Load(
            task,
            model,
            float(len(rs)),
            sum(r["prompt_tokens"] for r in rs) / len(rs),
            sum(r.get("completion_tokens") or 0 for r in rs) / len(rs),
        )
        for (task, model), rs in groups.items()
    ]


def combine(measured: Sequence[Load], stated: Stated, scale: float = 1.0) -> list[Load]:
    """The measured loads (volumes times `scale`) with what was stated laid over them, task by task; a
    task only stated needs all three of volume, tokens and model."""
    loads = []
    tasks = list(dict.fromkeys([m.task for m in measured] + list(stated.volume)))
    for task in tasks:
        mine = [m for m in measured if m.task == task]
        if not mine:
            missing = [
                flag
                for flag, have in (("--tokens", task in stated.tokens), ("--model", task in stated.model))
                if not have
            ]
            if missing:
                raise ValueError(f"task {task!r} is not in the log: give {' and '.join(missing)} for it")
            inp, out = stated.tokens[task]
            loads.append(Load(task, stated.model[task], stated.volume[task], inp, out))
            continue
        total = sum(m.requests for m in mine)
        for m in mine:
            share = m.requests / total
            requests = stated.volume[task] * share if task in stated.volume else m.requests * scale
            inp, out = stated.tokens.get(task, (m.input_tokens, m.output_tokens))
            loads.append(Load(task, stated.model.get(task, m.model), requests, inp, out))
    return loads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume", action="append", default=[], metavar="TASK=N", help="requests a month")
    parser.add_argument(
        "--tokens", action="append", default=[], metavar="TASK=IN:OUT", help="mean tokens per request"
    )
    parser.add_argument("--model", action="append", default=[], metavar="TASK=MODEL", help="routed model")
    parser.add_argument(
        "--month", action="store_true", help="scale the log's volumes from its time span to 30 days"
    )
