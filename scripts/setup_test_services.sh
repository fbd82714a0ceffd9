#!/usr/bin/env bash
# What the integration tests need besides .venv: Debian's redis-server (affinity across replicas),
# Debian's chromium (the console's browser tests; Playwright drives it, no browser download) and vLLM's
# own virtual environment (a real vLLM server on CPU). Idempotent; fast once done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) -eq 0 ]]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi

apt_install() {  # apt_install PACKAGE COMMAND: install PACKAGE unless COMMAND is already there
  local package=$1 command=$2
  command -v "$command" >/dev/null 2>&1 && return 0
  if [[ "$SUDO" == "none" ]]; then
    echo "WARNING: $package is missing and cannot be installed without root; its tests will be skipped" >&2
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "$package" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "$package" >/dev/null; }
  echo "installed $package"
}

apt_install redis-server redis-server
# The package starts a system-wide server on 6379; the tests start their own on a free port.
if [[ "$SUDO" != "none" ]]; then $SUDO service redis-server stop >/dev/null 2>&1 || true; fi
apt_install chromium chromium

scripts/setup_vllm_env.sh
