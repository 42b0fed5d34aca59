# cil-lightning: `make help` lists the targets. Every target that needs the venv creates it first.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Torch wheels that lie on this project's machines (a CUDA build; runs on the CPU too).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install torch, then the package with [dev]

train: $(STAMP) ## train the tiny model on the shipped clips (CPU, a few minutes)
	$(PY) -m cil_lightning train

test: $(STAMP) ## the fast test suite (no slow, no GPU tests)
	$(PY) -m pytest -q

test-full: $(STAMP) ## every test, slow and GPU ones included (GPU tests need a GPU)
	$(PY) -m pytest -q -m ''

lint: $(STAMP) ## ruff
	$(PY) -m ruff check src tests bench data experiments
	$(PY) -m ruff format --check src tests bench data experiments

bench: $(STAMP) ## CPU benchmarks, JSON + Markdown in bench/results/ (GPU: bench_train_throughput.py --size full)
	$(PY) bench/bench_decode.py
	$(PY) bench/bench_train_step.py
	$(PY) bench/bench_train_throughput.py

reproduce-leakage: $(STAMP) ## the leakage lab: exact Gaussian lab + trained moving textures (CPU)
	nice -n 10 $(PY) experiments/leakage_lab/run_lab.py

reproduce-leakage-study: $(STAMP) ## the leakage study on the shipped clips (about 40 min on 2 CPU cores)
	$(PY) experiments/leakage_study/run_study.py

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache

.PHONY: help install train test test-full lint bench reproduce-leakage reproduce-leakage-study clean
