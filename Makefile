# edgekit — developer entry points. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EDGEKIT := $(VENV)/bin/edgekit
STAMP := $(VENV)/.installed
export EDGEKIT_CACHE ?= $(CURDIR)/.cache

.PHONY: install data demo test test-fast bench lint gpu-check clean

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

test: install data
	$(VENV)/bin/pytest -q

test-fast: install data
	$(VENV)/bin/pytest -q -m "not slow"

bench: install data
	$(PY) benchmarks/run.py

lint: install
	$(VENV)/bin/ruff check edgekit tests benchmarks

gpu-check:
	bash scripts/gpu-check.sh

clean:
	rm -rf $(VENV) .cache out
