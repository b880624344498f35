#!/usr/bin/env bash
# The embedded demo (make demo): the whole flow of pipelines/demo.yaml on this machine's CPU.
# Re-running skips finished steps; DEMO_OUT=/some/dir changes the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
start=$(date +%s)
curate run pipelines/demo.yaml --set out="$OUT" "$@"
end=$(date +%s)
cat <<MSG

Demo finished in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s.
MSG
# the learning result, as curate report computed it from the run's tables ($OUT/report/learning.json)
if [ -s "$OUT/report/learning.txt" ]; then
  echo "What improved (SmolLM2-135M-Instruct, GRPO, held-out problems never trained on):"
  sed 's/^/  /' "$OUT/report/learning.txt"
fi
cat <<MSG

Everything is under $OUT/:
  $OUT/report/report.md        the report: rows per step, pass-rate/VPS histograms, VPS split, VAS vs uniform,
                               learning (held-out accuracy per arm, reward curves)
  $OUT/build/                  curated problems (problems.parquet), excluded.parquet (every dropped row + reason), stats.json
  $OUT/score/                  rollouts.parquet, scores.parquet (pass_rate, ovs, tds, vps), report/
  $OUT/rl/                     GRPO sets: rl_text.parquet, rl_multimodal.parquet (TRL format, VPS columns)
  $OUT/cot/                    cold-start SFT set: sft.parquet (TRL messages), excluded.parquet
  $OUT/staged/                 the three ReVisual-R1 stages on a tiny random VL model (machinery only) + summary.json
  $OUT/learn/                  the learning arms (vas/, uniform/: final checkpoints) and held-out evaluations (eval_*/)
  $OUT/publish/                exactly what \`curate publish\` would upload (README.md card + data/)
Load any table with: datasets.load_dataset("parquet", data_files="$OUT/rl/rl_text.parquet")

Next, on a GPU node (make gpu-setup; README "On a GPU node" has the 1- and 8-GPU commands):
  curate score --model Qwen/Qwen2.5-VL-7B-Instruct --data your/problems.parquet --n 16 --engine vllm --out runs/score
  train plan --config pipelines/revisual_r1_7b_staged.yaml --gpus 8 --gpu-mem 80
  accelerate launch --config_file pipelines/accelerate/zero3.yaml --num_processes 8 \\
      -m training.cli staged --config pipelines/revisual_r1_7b_staged.yaml
MSG
