"""A reduced version of the demo recipe (pipelines/demo.yaml) end to end: fewer rows, rollouts, tokens and
training steps, same commands. Real SmolLM2 scores and writes CoT; a tiny Qwen2-VL trains the three stages;
the report's numbers are checked against the tables the run produced."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "pipelines" / "demo_data"


def _reduced_data(dst: Path) -> Path:
    (dst / "gsm8k").mkdir(parents=True)
    (dst / "math_vision" / "images").mkdir(parents=True)
    lines = (DEMO_DATA / "gsm8k/train_sample.jsonl").read_text().splitlines()
    # 12 real problems + the 7 planted duplicates / contamination at the end of the sample
    (dst / "gsm8k/train_sample.jsonl").write_text("\n".join(lines[:12] + lines[-7:]) + "\n")
    mv = (DEMO_DATA / "math_vision/testmini_sample.jsonl").read_text().splitlines()[:6]
    (dst / "math_vision/testmini_sample.jsonl").write_text("\n".join(mv) + "\n")
    for line in mv:
        img = json.loads(line)["image"]
        shutil.copy(DEMO_DATA / "math_vision" / img, dst / "math_vision" / img)
    ar = (DEMO_DATA / "arithmetic.jsonl").read_text().splitlines()[:24]
    (dst / "arithmetic.jsonl").write_text("\n".join(ar) + "\n")
    held = (DEMO_DATA / "arithmetic_heldout.jsonl").read_text().splitlines()[:8]
    (dst / "arithmetic_heldout.jsonl").write_text("\n".join(held) + "\n")
    return dst


@pytest.mark.slow
def test_reduced_demo_recipe_end_to_end(tmp_path):
    data = _reduced_data(tmp_path / "data")
    out = tmp_path / "out"
    # the RL sets keep every pass rate (the reduced run is too short for a 0 < p < 1 band to keep prompts
    # on every machine); whatever SmolLM2 writes, every assertion below holds
    cmd = [sys.executable, "-m", "curation.cli", "run", "pipelines/demo.yaml", "--set", f"out={out}",
           "--set", f"data={data}", "--set", "score_engine=hf", "--set", "score_engine_opt=dtype=bfloat16", "--set", "n_max=4", "--set", "round=2", "--set", "score_tokens=16",
           "--set", "train_steps=1", "--set", "learn_steps=1", "--set", "eval_n=2",
           "--set", "min_pass=>=0", "--set", "max_pass=<=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    build = json.loads((out / "build/stats.json").read_text())
    kept = pq.read_table(out / "build/problems.parquet")
    assert build["input_rows"] == 12 + 7 + 6 + 24
    reasons = build["excluded_by_reason"]
    assert reasons.get("exact_duplicate", 0) >= 3 and reasons.get("near_duplicate", 0) >= 1
    assert reasons.get("benchmark_contamination") == 1

    scores = pq.read_table(out / "score/scores.parquet")
    score_ex = pq.read_table(out / "score/excluded.parquet").to_pylist()
    n_images = sum(1 for r in kept.to_pylist() if r["images"])
    assert scores.num_rows + len(score_ex) == kept.num_rows
    assert sum(r["reason"] == "needs_vision" for r in score_ex) == n_images == 6
    # adaptive scoring: rounds of 2 up to 4 rollouts per prompt
    assert set(scores.column("n").to_pylist()) <= {2, 4}
    assert json.loads((out / "score/stats.json").read_text())["settings"]["rules"][-1] == "last_math"  # --lenient

    rl_mm = pq.read_table(out / "rl/rl_multimodal.parquet")
    assert rl_mm.num_rows == 6 and all(r["images"] for r in rl_mm.to_pylist())
    rl_text = pq.read_table(out / "rl/rl_text.parquet")
    assert rl_text.num_rows == scores.num_rows  # the full band keeps every scored text prompt

    # cold start: every generated solution is accounted for (kept or excluded with a reason); with none
    # accepted, stage 1 is skipped (on_empty: skip) and stage 2 starts from the base model
    cot = json.loads((out / "cot/stats.json").read_text())
    sft_rows = pq.read_metadata(out / "cot/sft.parquet").num_rows
    summary = json.loads((out / "staged/summary.json").read_text())
    stages = summary["stages"] if isinstance(summary, dict) else summary
    assert [s["name"] for s in stages] == ["cold_start", "mm_rl", "text_rl"]
    if sft_rows:
        assert stages[0]["status"] == "trained" and stages[0]["steps"] == 1
    else:
        assert stages[0]["status"] == "skipped (no training rows)"
        assert stages[1]["started_from"] == stages[0]["checkpoint"]
    assert [s["status"] for s in stages[1:]] == ["trained", "trained"]
    c = cot["counts"]
    assert c["rows_read"] == pq.read_metadata(out / "cot_input/problems.parquet").num_rows
    assert c["generated"] == 2 * c["problems_with_samples"] and c["kept"] == sft_rows <= c["accepted"]
    assert (out / "publish/README.md").exists()

    # the report's numbers are read from the tables
    report = (out / "report/report.md").read_text()
    assert f"{build['input_rows']} rows in = {build['output_rows']} kept + {build['excluded_rows']} excluded" in report
    assert f"prompts scored: {scores.num_rows};" in report
    for png in ("pass_rate_hist.png", "vps_hist.png"):
        assert (out / "report" / png).stat().st_size > 1000
    vu = json.loads((out / "report/vas_vs_uniform.json").read_text())
    assert vu["prompts"] == scores.num_rows and 0.0 <= vu["vas_mix"] <= 1.0
    assert re.search(r"uniform \| 0\.\d{3}", report)

    # learning section: both arms trained from SmolLM2 for the same steps; before/after accuracies and their
    # intervals are read from the held-out evaluations (whatever the model wrote)
    learn = json.loads((out / "report/learning.json").read_text())
    base = pq.read_table(out / "learn/eval_base/scores.parquet").column("pass_rate").to_pylist()
    assert learn["heldout_problems"] == len(base) == 8 and abs(learn["before"] - sum(base) / 8) < 1e-9
    assert set(learn["arms"]) == {"vas", "uniform"}
    for arm, a in learn["arms"].items():
        after = pq.read_table(out / f"learn/eval_{arm}/scores.parquet").column("pass_rate").to_pylist()
        assert a["steps"] == 1 and abs(a["after"] - sum(after) / len(after)) < 1e-9
        assert a["lo"] <= a["diff"] <= a["hi"] and abs(a["diff"] - (a["after"] - a["before"])) < 1e-9
        assert a["within_noise"] == (a["lo"] <= 0 <= a["hi"])
        assert f"| {arm} | 1 | {a['before']:.3f} | {a['after']:.3f} |" in report
    vmu = learn["vas_minus_uniform"]
    assert abs(vmu["diff"] - (learn["arms"]["vas"]["after"] - learn["arms"]["uniform"]["after"])) < 1e-9
    assert (out / "report/learning_rewards.png").stat().st_size > 1000
    sp = json.loads((out / "report/vps_split.json").read_text())
    assert sum(g["prompts"] for g in sp["groups"]) == scores.num_rows
    assert abs(sum(g["vas_mass_run"] for g in sp["groups"]) - 1) < 1e-9

    # re-running the flow skips every finished step
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 step(s) ran" in again.stdout
