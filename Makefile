# Two commands do everything on a fresh machine:
#   make serve   set up .venv and start the service on the shipped checkpoint and routers
#   make test    set up .venv (with test tools), redis-server and vLLM's venv, and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed first and pinned: a bare `torch` would pull several GB of CUDA packages on CPU machines.
# On a CUDA machine, point TORCH_SPEC at the CUDA build you want (any torch>=2.3 works).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install serve test test-services proto bench lint
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)
	$(PY) -m server.main $(ARGS)

# Debian's redis-server and vLLM's own virtual environment (.venv-vllm) for the integration tests.
test-services:
	scripts/setup_test_services.sh

# The two set-ups are independent pip/apt work: side by side they take the time of the longer one.
test:
	$(MAKE) -j2 --no-print-directory install test-services
	$(PY) -m pytest -q $(ARGS)

# Regenerate the committed gRPC stubs in taskrouter/v1 from proto/ (a test fails when they are stale).
proto: $(STAMP)
	$(PY) scripts/gen_proto.py

bench: $(STAMP)
	$(PY) -m loadtests.bench_classify $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
