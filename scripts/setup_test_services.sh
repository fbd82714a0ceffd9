#!/usr/bin/env bash
# What the integration tests need besides .venv: Debian's redis-server (affinity across replicas) and
# vLLM's own virtual environment (a real vLLM server on CPU). Idempotent; fast once done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  if [[ "$SUDO" == "none" ]]; then
    echo "WARNING: redis-server is missing and cannot be installed without root; its tests will be skipped" >&2
  else
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q redis-server >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q redis-server >/dev/null; }
    # The package starts a system-wide server on 6379; the tests start their own on a free port.
    $SUDO service redis-server stop >/dev/null 2>&1 || true
    echo "installed $(redis-server --version | cut -d' ' -f1-3)"
  fi
fi

scripts/setup_vllm_env.sh
