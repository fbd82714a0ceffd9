"""Model-side benchmark of the classifier backends (torch, ONNX fp32, ONNX int8): latency by batch and
prompt length, and closed-set accuracy on the shared labelled sets, each fast path against torch.

    python -m loadtests.bench_backends                         # all backends, 1000 test rows per set
    python -m loadtests.bench_backends --backends torch onnx-int8 --rows 300 --sets snips hwu64
    python -m loadtests.bench_backends --backends torch onnx-int8 --int8-per-tensor   # + the stock recipe

No server: this is what the engine's worker thread does per batch, the backends timed in turn call by
call (fair ratios on a noisy machine). Not a test (it takes minutes); the numbers go in loadtests/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from models import ChatMessage, PromptInput
from models.onnx_export import MODEL_FILE, OnnxEncoder, export_onnx
from server.classify.engine import Engine, TaskText
from server.config import ModelSection
from training.data import FALLBACK, load_taxonomies

SETS = ("hwu64", "snips", "banking77", "p3_task_types", "mmlu")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(
    engines: dict[str, Engine], shapes: list[tuple[int, int]], repeats: int
) -> dict[str, dict[tuple[int, int], list[float]]]:
    """Per backend and shape, `repeats` timings of one `score` call, the backends interleaved call by
    call, so that a noisy neighbour slows them all alike and the ratios hold."""
    out: dict[str, dict[tuple[int, int], list[float]]] = {name: {} for name in engines}
    for batch, tokens in shapes:
        calls = {}
        for name, engine in engines.items():
            proto = engine.task_prototypes([TaskText(f"task {i}") for i in range(8)])
            text = "please summarise this support ticket about a refund " * 40
            prompt = PromptInput(engine.prepare([ChatMessage("user", text)]).input_ids[:tokens], False)
            calls[name] = lambda e=engine, p=prompt, pr=proto, b=batch: e.score([p] * b, [pr] * b)
            for _ in range(3):
                calls[name]()
            out[name][(batch, tokens)] = []
        for _ in range(repeats if batch == 1 else max(10, repeats // 4)):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                out[name][(batch, tokens)].append((time.perf_counter() - start) * 1e3)
    return out


def accuracy(engine: Engine, sets: list[str], rows: int) -> dict[str, np.ndarray]:
    """Per set, the [N, T] score matrix over the first `rows` in-scope test rows."""
    scores = {}
    for taxonomy in load_taxonomies(sets):
        test = taxonomy.rows("test", with_fallback=False)[:rows]
        proto = engine.task_prototypes([TaskText(t.description) for t in taxonomy.tasks])
        mats = []
        for start in range(0, len(test), 32):
            chunk = [engine.prepare(list(e.messages)) for e in test[start : start + 32]]
            mats += engine.score(chunk, [proto] * len(chunk))
        scores[taxonomy.name] = np.stack(mats)
    return scores


def batch_mates(engine: Engine, sets: list[str], rows: int, batched: dict[str, np.ndarray]) -> float:
    """The largest |score alone - score in its batch of 32| over the first `rows` test rows of each set;
    `batched` is `accuracy`'s score matrices (scored in batches of 32), so only the lone calls run here."""
    worst = 0.0
    for taxonomy in load_taxonomies(sets):
        test = taxonomy.rows("test", with_fallback=False)[:rows]
        proto = engine.task_prototypes([TaskText(t.description) for t in taxonomy.tasks])
        for example, together in zip(test, batched[taxonomy.name], strict=False):
            alone = engine.score([engine.prepare(list(example.messages))], [proto])[0]
            worst = max(worst, float(np.abs(alone - together).max()))
    return worst


def labels(sets: list[str], rows: int) -> dict[str, np.ndarray]:
    out = {}
    for taxonomy in load_taxonomies(sets):
        test = [e for e in taxonomy.rows("test", with_fallback=False) if e.label != FALLBACK][:rows]
        out[taxonomy.name] = np.array([taxonomy.task_names.index(e.label) for e in test])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--rows", type=int, default=1000, help="test rows per set (0 skips accuracy)")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--spin",
        action="store_true",
        help="let ONNX Runtime threads spin (the server's default); off here because spinning pools "
        "of the backends timed in turn would steal each other's cores",
    )
    parser.add_argument(
        "--int8-per-tensor",
        action="store_true",
        help="also run onnxruntime's stock per-tensor activation scales (`onnx-int8-per-tensor`), the recipe "
        "the export replaced, and print how far batch mates move each int8 variant's scores",
    )
    args = parser.parse_args()

    shapes = [(1, 16), (1, 32), (1, 64), (1, 128), (8, 32), (32, 32)]
    truth = labels(args.sets, args.rows) if args.rows else {}
    engines = {}
    for backend in args.backends:
        engines[backend] = Engine.load(
            ModelSection(backend=backend, checkpoint=args.checkpoint, threads=args.threads, spin=args.spin)
        )
        engines[backend].warmup()
    if args.int8_per_tensor:
        section = ModelSection(backend="onnx-int8", checkpoint=args.checkpoint, threads=args.threads)
        engine = Engine.load(section)
        path = Path(tempfile.mkdtemp(prefix="bench-int8-")) / MODEL_FILE
        export_onnx(engine.model, path, "int8", per_token=False)
        engine.onnx = OnnxEncoder(path, threads=args.threads, spin=args.spin)
        engine.warmup()
        engines["onnx-int8-per-tensor"] = engine
        args.backends.append("onnx-int8-per-tensor")
    lat = latency(engines, shapes, args.repeats)
    scores = {b: accuracy(e, args.sets, args.rows) for b, e in engines.items()} if args.rows else {}

    print("\nlatency per batch (ms, p50 / p99), and prompts/s at p50")
    print(f"{'batch x tokens':>15} " + " ".join(f"{b:>26}" for b in args.backends))
    for shape in shapes:
        cells = []
        for backend in args.backends:
            values = lat[backend][shape]
            p50 = statistics.median(values)
            cells.append(f"{p50:7.2f} / {pct(values, 0.99):7.2f} {shape[0] * 1e3 / p50:7.0f}/s")
        print(f"{f'{shape[0]} x {shape[1]}':>15} " + " ".join(f"{c:>26}" for c in cells))
    if not args.rows:
        return
    reference = args.backends[0]
    print(
        f"\nclosed-set accuracy, test split (first {args.rows} rows);"
        f" agreement and max |score diff| vs {reference}"
    )
    for name in truth:
        parts = []
        for backend in args.backends:
            s = scores[backend][name]
            acc = float((s.argmax(1) == truth[name]).mean())
            ref = scores[reference][name]
            agree = float((s.argmax(1) == ref.argmax(1)).mean())
            parts.append(f"{backend} {acc:.4f} (agree {agree:.3f}, max diff {np.abs(s - ref).max():.3f})")
        print(f"{name:>14} n={len(truth[name])}: " + "  ".join(parts))
    int8 = [b for b in args.backends if b.startswith("onnx-int8")]
    if int8:
        print("\nlargest score move between a prompt alone and in its batch of 32 (first 200 rows per set)")
        for backend in int8:
            move = batch_mates(engines[backend], args.sets, min(args.rows, 200), scores[backend])
            print(f"{backend:>22}: {move:.4f}")


if __name__ == "__main__":
    main()
