# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install the project into it.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-cluster install clean lint-proto lint-imports

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY)"; exit 1; }
	$(PY) -m venv $(VENV)

# torch is pinned to the CPU build (2.13.0) before anything else can pull a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job end to end: a gRPC server with embedded Ray, one search job submitted, watched and
# its result downloaded (`hwcompress demo` runs the same search without the service).
demo: $(STAMP)
	$(BIN)/hwcompress demo-service

# buf's STANDARD lint on the API (services/proto/buf.yaml); buf comes from npm (@bufbuild/buf),
# installed into the venv so CI needs nothing but the package registries.
BUF_VERSION := 1.75.0
BUF := $(VENV)/buf/node_modules/.bin/buf

$(BUF): | $(BIN)/python
	@command -v npm >/dev/null 2>&1 || { echo "need npm (for @bufbuild/buf)"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/buf @bufbuild/buf@$(BUF_VERSION)

lint-proto: $(BUF)
	cd services/proto && $(CURDIR)/$(BUF) lint

# layers point one way (services -> agents -> automl -> latency_models -> automl.core), no cycles
lint-imports: $(STAMP)
	$(BIN)/lint-imports --no-cache .importlinter

test: $(STAMP) lint-proto lint-imports
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# A real multi-host Ray cluster on this machine: head, worker and the service (deploy/'s compose
# command) each in a network namespace of its own, a job submitted over gRPC, trials checked to
# have run on both nodes (docs/ray.md). Needs root and `ip netns`; skipped otherwise.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/test_ray_multihost.py

clean:
	rm -rf $(VENV) .hwcompress-cache
