"""The classifier's encoder as an ONNX Runtime session: the fast CPU path, with torch as the reference.

Measured on the 2-core build machine (loadtests/bench_backends.py has the current numbers): at batch 1
and 32 tokens ONNX Runtime in fp32 takes about half of torch eager's time, and with the encoder's
MatMuls quantised to int8 (weights per output channel, activations per token) less again. Only MatMuls
are quantised, and not those of the first and last layer: they are where the time goes, and quantising
more costs accuracy (measured, see `_first_and_last_layer`) for a little more speed. Activations are
scaled per token, not per tensor as onnxruntime's dynamic quantiser does, so that a prompt's scores do
not depend on its batch mates (see `_per_token_activations`).

The export is a pure function of the weights, so it is cached on disk under a hash of them: a
process exports once (seconds), later starts and sibling worker processes load the file. Files are
written under a temporary name and renamed into place, so a crash or a concurrent exporter never
leaves a half-written model where a reader would find it.

Padding tokens go through the experts too in the exported graph (routing them out needs a
data-dependent gather the exporter cannot express); that is exact for the real tokens, because
attention never reads padding and pooling drops it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from models.classifier import TaskClassifier
from models.moe import MIX_GRAPH

log = logging.getLogger(__name__)

Precision = Literal["fp32", "int8"]
MODEL_FILE = "encoder.onnx"
OPSET = 17
# Names how the int8 file is made; part of the cache key, so a changed recipe never reuses old files.
INT8_RECIPE = "dynamic-matmul-per-channel-s8, activations per token u8, first+last layer fp32"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "taskrouter" / "onnx"


class _EncoderGraph(nn.Module):
    """What is exported: token ids and mask in, unit-norm sentence embeddings out."""

    def __init__(self, classifier: TaskClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier.encoder(input_ids, attention_mask)


def weights_key(classifier: TaskClassifier, precision: Precision) -> str:
    """A hash of everything the exported file depends on: weights, architecture, tool versions."""
    import onnxruntime

    digest = hashlib.sha256()
    meta = {
        "config": classifier.config.__dict__,
        "precision": precision,
        "recipe": INT8_RECIPE if precision == "int8" else "",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": OPSET,
        "moe_graph": MIX_GRAPH,
    }
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in sorted(classifier.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:24]


def export_onnx(classifier: TaskClassifier, path: Path, precision: Precision, per_token: bool = True) -> None:
    """Write the encoder as ONNX to `path` (fp32, or with int8 MatMul weights). `per_token=False` keeps
    onnxruntime's per-tensor activation scales (batch-dependent; only loadtests/bench_backends.py's
    comparison uses it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _EncoderGraph(classifier).eval().to(device="cpu", dtype=torch.float32)
    ids = torch.full((2, 16), 1000, dtype=torch.long)
    mask = torch.ones_like(ids)
    fp32 = path.with_suffix(".fp32.onnx") if precision == "int8" else path
    with classifier.static_graph(), warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the legacy exporter narrates every traced branch
        # The TorchScript exporter (dynamo=False): it takes the encoder's dynamic batch and length
        # axes as they are, where torch.export needs every data-dependent branch rewritten.
        torch.onnx.export(
            model,
            (ids, mask),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "embeddings": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    if precision == "int8":
        # The quantiser narrates ~150 INFO lines and a pre-processing tip on the root logger.
        with _root_logging_errors_only():
            quantize_dynamic(
                str(fp32),
                str(path),
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=_first_and_last_layer(fp32, len(classifier.encoder.layers())),
                per_channel=True,
                weight_type=QuantType.QInt8,
                # Tensors the quantiser's shape inference cannot type are float activations here.
                extra_options={"DefaultTensorType": 1},
            )
        if per_token:
            _per_token_activations(path)
        fp32.unlink()


@contextlib.contextmanager
def _root_logging_errors_only() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _first_and_last_layer(path: Path, layers: int) -> list[str]:
    """MatMuls of the first and last encoder layers, which stay in fp32.

    Measured on 1000 test rows per set against torch: with every MatMul in int8, accuracy moved by
    -0.5 (banking77), -0.6 (mmlu), -0.2 (hwu64) points; keeping these two layers in fp32 brought
    all three within +-0.3 for about a fifth of the speed-up. The first layer reads raw embeddings
    with the widest activation range, and the last one's error goes straight into the pooled vector.
    """
    import onnx

    marks = ("/layer.0/", f"/layer.{layers - 1}/")
    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and any(m in n.name for m in marks)]


def _per_token_activations(path: Path) -> None:
    """Rewrite the quantiser's per-tensor activation scaling into per-token (per-row) scaling, in place.

    `quantize_dynamic` quantises each MatMul's input with one scale for the whole [batch, tokens, K]
    tensor, so one batch mate with a wider range coarsens everybody's rounding: with the shipped
    checkpoint a prompt's similarity moved by up to 0.099 between alone and in a batch of 32, enough to
    change a borderline route under load. Here each row x gets its own symmetric range r = max|x| and
    is quantised as round(127 x / r) + 128 (uint8, zero point 128, so ORT keeps its u8 x s8 kernels).
    The quantiser's scale output becomes the constant 1/127, which its dequantising Mul (a_scale x
    w_scale) already takes as a scalar, and that Mul's output is multiplied by r. Standard ONNX ops
    only: emitting ORT's MatMulIntegerToFloat contrib op instead measured level.
    Cost (loadtests/README.md): 6-12% more encoder time than per-tensor on a 2-core AVX2 CPU (about
    15% of a lone request's p50 through the server: ~200 more small ops, each paying ORT's dispatch),
    for scores that no longer depend on the batch and sit closer to torch's.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # Each quantised MatMul is DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(, a_scale x w_scale):
    # the last Mul's name -> the quantiser whose row range it must be multiplied by.
    rescale: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            continue
        for matmul in consumers[node.output[0]]:
            (cast,) = consumers[matmul.output[0]]
            (dequant,) = consumers[cast.output[0]]
            if matmul.op_type != "MatMulInteger" or cast.op_type != "Cast" or dequant.op_type != "Mul":
                raise ValueError(f"unexpected quantised MatMul pattern at {matmul.name}")
            rescale[dequant.name] = node.name
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(128, np.uint8), "per_token_zero_point"),
            numpy_helper.from_array(np.array(1 / 127, np.float32), "per_token_step"),
            numpy_helper.from_array(np.array(1e-8, np.float32), "per_token_min_range"),
        ]
    )
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            x, (quantized, scale, zero_point), p = node.input[0], node.output, node.name
            nodes += [
                # max|x| per row without writing |x| out: max(max x, -min x), floored so 0-rows stay finite.
                helper.make_node("ReduceMax", [x], [f"{p}_hi"], axes=[-1], keepdims=1),
                helper.make_node("ReduceMin", [x], [f"{p}_lo"], axes=[-1], keepdims=1),
                helper.make_node("Neg", [f"{p}_lo"], [f"{p}_neg_lo"]),
                helper.make_node("Max", [f"{p}_hi", f"{p}_neg_lo", "per_token_min_range"], [f"{p}_range"]),
                helper.make_node("Div", [x, f"{p}_range"], [f"{p}_unit"]),
                helper.make_node(
                    "QuantizeLinear", [f"{p}_unit", "per_token_step", "per_token_zero_point"], [quantized]
                ),
                helper.make_node("Identity", ["per_token_zero_point"], [zero_point]),
                helper.make_node("Identity", ["per_token_step"], [scale]),
            ]
            continue
        nodes.append(node)
        if node.name in rescale:
            out = node.output[0]
            node.output[0] = f"{out}_per_unit_range"
            row_range = f"{rescale[node.name]}_range"
            nodes.append(helper.make_node("Mul", [node.output[0], row_range], [out], name=f"{out}_rescale"))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))


def cached_export(classifier: TaskClassifier, precision: Precision, cache_dir: Path | None = None) -> Path:
    """The exported file for these weights, exporting it first if no earlier process has."""
    cache = cache_dir or default_cache_dir()
    final = cache / f"{weights_key(classifier, precision)}-{precision}"
    if (final / MODEL_FILE).is_file():
        return final / MODEL_FILE
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=cache)
        probe.close()
    except OSError as exc:  # e.g. a container user without a writable home: export, just not cached
        cache = Path(tempfile.mkdtemp(prefix="taskrouter-onnx-"))
        final = cache / final.name
        log.warning(
            "ONNX cache %s is not writable (%s); exporting to %s",
            cache_dir or default_cache_dir(),
            exc,
            cache,
        )
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=cache))
    try:
        log.info("exporting the encoder to ONNX (%s); cached in %s", precision, final)
        export_onnx(classifier, staging / MODEL_FILE, precision)
        try:
            staging.rename(final)
        except OSError:  # another process finished the same export first: theirs is identical
            if not (final / MODEL_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / MODEL_FILE


class OnnxEncoder:
    """Runs an exported encoder: int64 ids and mask [B, T] in, float32 embeddings [B, D] out.

    One session, called from one thread at a time (the engine's worker); `threads` bounds the
    session's own pool so that several worker processes on one host do not oversubscribe it.
    """

    def __init__(self, path: Path, threads: int = 0, spin: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning pool threads pick up the next op without a wake-up (a third off a lone request,
        # measured), but burn their cores for a moment after each run.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        return self.session.run(None, feed)[0]


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
