# gruwatch: `make test` and `make demo` work on a fresh Debian machine with Python 3.11 only.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first and pinned: a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-reliability check lint typecheck demo demo-bundle bench venv broker browser clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all]" --group dev
	touch $(STAMP)

broker:
	./scripts/ensure-broker.sh

# Debian's headless chromium + chromedriver for the dashboard's browser tests (no browser downloads).
browser:
	./scripts/ensure-chromium.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

check: lint typecheck

test: venv broker browser check
	$(BIN)/python -m pytest

# No Mosquitto needed: the demo starts an embedded broker (amqtt) unless given --broker URL.
demo: venv
	$(BIN)/gruwatch demo

# Rebuild the small model bundle shipped for the demo (after a change to features, model or simulator).
demo-bundle: venv
	$(BIN)/gruwatch demo --build-bundle gruwatch/demo_bundle

# The agent on aarch64 under qemu: builds .arm/ (cached) and runs tests/arm (docs/deploy-gateway.md).
.PHONY: test-arm
test-arm: venv broker
	PYTHON=$(BIN)/python ./scripts/build-arm-env.sh .arm
	GRUWATCH_ARM_ENV=$(CURDIR)/.arm $(BIN)/python -m pytest -m arm tests/arm

# Long reliability runs (docs/reliability.md; -s prints their FIGURE lines); reduced versions of each run in
# make test. About 65 minutes on 2 shared cores.
RELIABILITY_TESTS := tests/edge_agent/test_reliability.py tests/edge_agent/test_reliability_input.py \
	tests/edge_agent/test_reliability_soak.py
test-reliability: venv broker
	$(BIN)/python -m pytest -s -m reliability $(RELIABILITY_TESTS)

bench: venv broker
	$(BIN)/gruwatch bench

# Real bearings (../shared/data or GRUWATCH_REAL_DATA) with `gruwatch train` defaults; tables into docs/evaluation.md.
eval-real: venv
	$(BIN)/python benchmarks/eval_real.py --write-docs

clean:
	rm -rf $(VENV) .arm .pytest_cache .mypy_cache .ruff_cache .hypothesis
