# edgekit — developer entry points. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EDGEKIT := $(VENV)/bin/edgekit
STAMP := $(VENV)/.installed
export EDGEKIT_CACHE ?= $(CURDIR)/.cache

.PHONY: install data demo test test-fast corpus bench bench-quick lint gpu-check arm64-device clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch/torchvision pinned to the pair that installs from this workplace's disk; see README.
	$(PIP) install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

data:
	@bash scripts/ensure-data.sh

demo: install data
	$(EDGEKIT) demo

# Both report every skip with its reason and the skip count; under CI (CI or
# EDGEKIT_STRICT_SKIPS=1, which .ci/run sets) a skip for anything but a missing GPU or TensorRT
# fails the run (tests/skip_policy.py).
# CI's suite: everything but the `extended` variants, which include the larger tests
# tests/ci_budget.py defers to keep CI under 30 minutes (the slowest 25 are listed at the end)
test: install data
	$(VENV)/bin/pytest -q -rs -m "not extended" --durations=25

# every test, the extended variants too
test-all: install data
	$(VENV)/bin/pytest -q -rs

test-fast: install data
	$(VENV)/bin/pytest -q -rs -m "not slow and not extended"

# The generated hostile corpus at a larger count than CI's (issue 25; CORPUS_EXAMPLES per group
# of cases: each command, each config file kind, each API function). Prints the case count.
CORPUS_EXAMPLES ?= 400
corpus: install data
	EDGEKIT_CORPUS_EXAMPLES=$(CORPUS_EXAMPLES) $(VENV)/bin/pytest -q tests/e2e/test_hostile_corpus.py

# Reruns every benchmark and rewrites the README's measured sections (hours; a quiet machine).
# `make bench-quick` proves the scripts work in minutes, writing under .cache/bench-quick/.
bench: install data
	$(PY) benchmarks/run.py

bench-quick: install data
	$(PY) benchmarks/run.py --quick

lint: install
	$(VENV)/bin/ruff check edgekit tests benchmarks

gpu-check:
	bash scripts/gpu-check.sh

# An emulated arm64 (Jetson-class) device: aarch64 Python + onnxruntime 1.19.2 under qemu-user,
# from Debian and PyPI, cached in .cache/arm64-device; prints its device profile (README).
arm64-device:
	bash scripts/arm64-device.sh

clean:
	rm -rf $(VENV) .cache out
