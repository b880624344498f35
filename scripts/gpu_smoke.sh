#!/usr/bin/env bash
# GPU smoke test: on a machine with one CUDA GPU (and, with --wheels, nothing but a folder of wheels), install
# the project and run, in a few minutes, the two GPU jobs of the README at tiny scale:
#   1. `curate score --engine hf` on CUDA in bf16 with a tiny random Qwen2.5-VL and real MATH-Vision images
#      (pipelines/demo_data), twice: the re-run must give the same rollouts;
#   2. `train staged` on CUDA: SFT -> multimodal GRPO (PAD, a VAS re-score, reference model) -> text GRPO with
#      the vision tower frozen; bf16 mixed precision with fp32 master weights, gradient checkpointing,
#      flash_attention_2 asked for (sdpa where flash-attn is missing), each stage in its own process;
#   3. the same under `accelerate launch` with pipelines/accelerate/zero3.yaml in one process.
# It prints one `CHECK name: PASS|FAIL` line per check and exits non-zero if any failed.
#
#   scripts/gpu_smoke.sh [--wheels DIR] [--work DIR] [--cpu] [--python PY]
#   scripts/gpu_smoke.sh --fetch-wheels DIR [--python-version 3.12]   # on a machine with a package registry
#
# --wheels DIR  pip install --no-index --find-links DIR -e ".[deepspeed]", keeping the torch, torchvision and
#               transformers already installed (the GPU image's: torch 2.11+cu130, transformers 5.17).
# --cpu         run everything on the CPU (auto when torch sees no CUDA device): every line but CUDA is tested
#               this way on the development machine.
# --fetch-wheels DIR  download what --wheels needs for the GPU image (Linux x86_64, --python-version) - the
#               project's dependencies minus what the image has, DeepSpeed built as a pure-Python wheel.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
WHEELS=""
WORK=""
DEVICE=""
FETCH=""
PYVER=3.12
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --cpu) DEVICE=cpu; shift ;;
    --python) PY=$2; shift 2 ;;
    --fetch-wheels) FETCH=$2; shift 2 ;;
    --python-version) PYVER=$2; shift 2 ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
done

if [ -n "$FETCH" ]; then
  # Resolve the project's dependencies for the image, then download every wheel the image does not have.
  mkdir -p "$FETCH"
  # only what the image is known to have is left out (anything else is downloaded: pip keeps an installed
  # package that satisfies the requirement, and a missing one would stop the offline install)
  IMAGE_HAS='^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|transformers)$'
  "$PY" - "$FETCH" "$IMAGE_HAS" "$PYVER" <<'PYEOF'
import json, os, re, subprocess, sys, tomllib
folder, image_has, pyver = sys.argv[1], re.compile(sys.argv[2], re.I), sys.argv[3]
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
# the project's dependencies, DeepSpeed's (its wheel is built below) and the build backend of `pip install -e`;
# torch and transformers as the image has them, so that the resolution matches it (they are not downloaded)
deps = [d for d in project["dependencies"] if not re.match(r"(torch|transformers)\b", d)]
deps += ["trl>=1.16,<1.17", "hjson", "ninja", "py-cpuinfo", "pydantic>=2", "msgpack", "einops", "psutil",
         "setuptools>=68", "wheel", "torch==2.11.0", "transformers==5.17.0"]
base = [sys.executable, "-m", "pip"]
# glibc >= 2.28 (torch's own wheels need it): every manylinux tag up to 2_28
tags = [f"manylinux_2_{i}_x86_64" for i in range(28, 16, -1)] + ["manylinux2014_x86_64", "manylinux2010_x86_64",
                                                                 "manylinux1_x86_64", "linux_x86_64"]
plat = ["--python-version", pyver, "--only-binary=:all:", *(x for t in tags for x in ("--platform", t))]
rep = f"{folder}/report.json"
subprocess.run([*base, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", rep, *plat,
                "--target", f"{folder}/.t", *deps], check=True)
names = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.load(open(rep))["install"]]
keep = [f"{n}=={v}" for n, v in names if not image_has.match(n)]
subprocess.run([*base, "download", "--no-deps", "-d", folder, *plat, *keep], check=True)
# DeepSpeed is an sdist: build it once as a pure-Python wheel (no kernels)
subprocess.run([*base, "wheel", "--no-deps", "-w", folder, "deepspeed==0.19.8"], check=True,
               env={**os.environ, "DS_BUILD_OPS": "0"})
print(f"{len(keep)} wheels + deepspeed in {folder}")
PYEOF
  exit $?
fi

START=$(date +%s)
FAILS=0
note() { echo "== $*"; }
result() { # name, rc
  if [ "$2" -eq 0 ]; then echo "CHECK $1: PASS"; else echo "CHECK $1: FAIL (exit code $2)"; FAILS=$((FAILS + 1)); fi
}
count_fails() { FAILS=$((FAILS + $(grep -c ': FAIL' "$1" || true))); }

if [ -z "$DEVICE" ]; then
  DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
fi
WORK=${WORK:-$(mktemp -d /tmp/rlcurate-smoke.XXXXXX)}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false COLUMNS=200
export HF_DATASETS_CACHE="$WORK/hf_datasets" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" DS_BUILD_OPS=0
note "device: $DEVICE  python: $PY  work: $WORK"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)"

# 1. install -------------------------------------------------------------------------------------------------
if [ -n "$WHEELS" ]; then
  note "install from $WHEELS (no index), keeping this environment's torch / torchvision / transformers"
  "$PY" - > "$WORK/keep.txt" <<'PYEOF'
from importlib.metadata import PackageNotFoundError, version
for d in ("torch", "torchvision", "transformers"):
    try:
        print(f"{d}=={version(d)}")
    except PackageNotFoundError:
        pass
PYEOF
  "$PY" -m pip install --no-index --find-links "$WHEELS" -c "$WORK/keep.txt" -e ".[deepspeed]" > "$WORK/install.log" 2>&1
  result install $?
  tail -3 "$WORK/install.log"
fi
"$PY" -c "import curation, training, trl, deepspeed, math_verify; print('trl', trl.__version__, '| deepspeed', deepspeed.__version__)" \
  > "$WORK/imports.log" 2>&1
result imports $?
cat "$WORK/imports.log" | tail -1
BIN=$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")
CURATE=("$PY" -m curation.cli)
TRAIN=("$PY" -m training.cli)

# 2. inputs: the tiny Qwen2.5-VL, SFT and text RL tables; the multimodal problems through curate ingest ---------
"$PY" scripts/gpu_smoke.py prepare "$WORK" || exit 1
MODEL="$WORK/tiny_qwen2_5_vl"
"${CURATE[@]}" ingest pipelines/demo_data/math_vision/testmini_sample.jsonl --format math_vision --out "$WORK/ingest_mv" \
  > "$WORK/ingest.log" 2>&1
result ingest_math_vision $?

# 3. curate score --engine hf, bf16, twice ----------------------------------------------------------------------
for run in a b; do
  "${CURATE[@]}" score --model "$MODEL" --data "$WORK/ingest_mv/problems.parquet" --n 4 --max-tokens 24 --seed 0 \
    --engine hf --engine-opt dtype=bfloat16 --engine-opt device="$DEVICE" --chunk-size 16 --out "$WORK/score_$run" \
    > "$WORK/score_$run.log" 2>&1
  result "score_run_$run" $?
done
"$PY" scripts/gpu_smoke.py check-score "$WORK/score_a" "$WORK/score_b" "$DEVICE" | tee "$WORK/check_score.txt"
count_fails "$WORK/check_score.txt"
"${CURATE[@]}" rl-set --problems "$WORK/ingest_mv/problems.parquet" --scores "$WORK/score_a/scores.parquet" \
  --unscored keep --out "$WORK/rl" > "$WORK/rlset.log" 2>&1
result rl_set $?

# 4. train staged on the device ------------------------------------------------------------------------------
ON_CPU=$([ "$DEVICE" = cpu ] && echo true || echo false)
OV=(model="$MODEL" staged.stages.0.data.train="$WORK/sft.parquet"
    staged.stages.1.data.train="$WORK/rl/rl_multimodal.parquet" staged.stages.2.data.train="$WORK/rl_text.parquet"
    sft.max_steps=2 sft.save_steps=1 grpo.max_steps=2 grpo.save_steps=1 grpo.max_completion_length=16
    grpo.rewards.length.budget=8 sft.bf16=true grpo.bf16=true sft.gradient_checkpointing=true
    grpo.gradient_checkpointing=true grpo.beta=0.04 grpo.vas.rescore_every=1
    sft.model_init_kwargs.attn_implementation=flash_attention_2
    grpo.model_init_kwargs.attn_implementation=flash_attention_2
    sft.use_cpu="$ON_CPU" grpo.use_cpu="$ON_CPU" sft.disable_tqdm=true grpo.disable_tqdm=true)
note "train staged ($DEVICE)"
"${TRAIN[@]}" staged --config pipelines/staged_cpu.yaml "${OV[@]}" staged.output_dir="$WORK/staged" \
  --isolation process > "$WORK/staged.log" 2>&1
result staged_run $?
"$PY" scripts/gpu_smoke.py check-staged "$WORK/staged" "$WORK/staged.log" "$DEVICE" | tee "$WORK/check_staged.txt"
count_fails "$WORK/check_staged.txt"

# 5. the same under accelerate launch with the ZeRO-3 config, one process ------------------------------------
note "accelerate launch --config_file pipelines/accelerate/zero3.yaml --num_processes 1 ... train staged"
"$PY" -m accelerate.commands.launch --config_file pipelines/accelerate/zero3.yaml --num_processes 1 \
  -m training.cli staged --config pipelines/staged_cpu.yaml "${OV[@]}" staged.output_dir="$WORK/staged_zero3" \
  > "$WORK/staged_zero3.log" 2>&1
result zero3_run $?
"$PY" scripts/gpu_smoke.py check-staged "$WORK/staged_zero3" "$WORK/staged_zero3.log" "$DEVICE" --zero3 \
  | tee "$WORK/check_zero3.txt"
count_fails "$WORK/check_zero3.txt"

END=$(date +%s)
SECS=$((END - START))
if [ "$DEVICE" = cuda ]; then
  [ "$SECS" -lt 480 ]; result "under_8_minutes_${SECS}s" $?
else
  echo "INFO total ${SECS}s on CPU (the 8-minute budget applies to the GPU run)"
fi
note "logs in $WORK; $FAILS check(s) failed"
[ "$FAILS" -eq 0 ]
