"""The console's Evaluate on a real labelled set (not a test): builds a router from a shared set's task
descriptions, posts its test split to `/console/api/evaluate` of a real server, and prints accuracy,
fallback precision/recall, prompts per second and the cost saving the console shows.

    python -m loadtests.bench_evaluate --data ../shared/data/banking77_oos --rows 2000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

import httpx

from loadtests.bench_classify import start_server

CHEAP, STRONG = "llama-3.1-8b-instruct", "gpt-4o"  # from the shipped catalogue


def task_name(label: str) -> str:
    """The sets' labels (Refund_not_showing_up, reverted_card_payment?) as router task names."""
    return label if label == "fallback" else re.sub(r"[^a-z0-9._-]", "", label.lower().replace("_", "-"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/banking77_oos"))
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    tasks = json.loads((args.data / "tasks.json").read_text())
    rows = [json.loads(line) for line in (args.data / "examples.jsonl").read_text().splitlines()]
    test = [{"text": r["text"], "label": task_name(r["label"])} for r in rows if r.get("split") == "test"]
    random.Random(0).shuffle(test)
    test = test[: args.rows]
    router = {
        "name": "bench",
        "description": f"tasks of {args.data.name}",
        "policies": [
            {
                "custom_task": {"name": task_name(t["name"]), "description": t["description"]},
                "models": [CHEAP, STRONG],
            }
            for t in tasks
        ],
        "fallback_models": [STRONG],
    }
    empty = tempfile.mkdtemp()  # no shipped routers: only the one built here
    proc, _, http_port = start_server(["--routers-dir", empty])
    try:
        base = f"http://127.0.0.1:{http_port}"
        with httpx.Client(base_url=base, timeout=600) as http:
            created = http.post("/v2/gen-ai/models/routers", json=router)
            assert created.status_code == 201, created.text
            started = time.perf_counter()
            answer = http.post(
                "/console/api/evaluate", json={"router": "bench", "baseline": STRONG, "rows": test}
            )
            seconds = time.perf_counter() - started
            answer.raise_for_status()
            result = answer.json()
    finally:
        proc.terminate()
        proc.wait(30)

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    print(
        f"{args.data.name}: {result['rows']} prompts, {len(tasks)} tasks, "
        f"accuracy {fmt(result['accuracy'])}, "
        f"fallback precision {fmt(result['fallback_precision'])} recall {fmt(result['fallback_recall'])}; "
        f"{result['rows'] / seconds:.0f} prompts/s through /console/api/evaluate ({seconds:.1f} s); "
        f"cost routed vs all to {STRONG}: saving {fmt(result['cost']['saving'])}"
    )
    sweep = result["threshold"]
    print(
        f"threshold {sweep['current']:.2f} -> accuracy {fmt(result['accuracy'])}; best tried "
        f"{sweep['best']['threshold']:.2f} -> accuracy {fmt(sweep['best']['accuracy'])}"
    )


if __name__ == "__main__":
    main()
