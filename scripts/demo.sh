#!/usr/bin/env bash
# The embedded demo: curate a small sample shipped in pipelines/demo_data (GSM8K, MATH-Vision with images,
# generated arithmetic) with planted duplicates and a planted benchmark item, and show what was dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
DATA=pipelines/demo_data
mkdir -p "$OUT"
curate ingest "$DATA/gsm8k/train_sample.jsonl" --format gsm8k --out "$OUT/ingest/gsm8k"
curate ingest "$DATA/math_vision/testmini_sample.jsonl" --format math_vision --out "$OUT/ingest/math_vision"
curate ingest "$DATA/arithmetic.jsonl" --format jsonl --map problem=question,answer=answer --source arithmetic --out "$OUT/ingest/arithmetic"
curate build "$OUT/ingest/gsm8k" "$OUT/ingest/math_vision" "$OUT/ingest/arithmetic" --recipe pipelines/demo.yaml --out "$OUT/build"
echo
echo "Demo finished. Outputs:"
echo "  $OUT/build/problems.parquet   kept problems (load with datasets.load_dataset('parquet', data_files=...))"
echo "  $OUT/build/excluded.parquet   every dropped row with step + reason"
echo "  $OUT/build/stats.json         rows in/out per step and per reason"
