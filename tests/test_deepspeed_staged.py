"""`train staged` under one `accelerate launch` with the shipped ZeRO-3 config: all three stages of the CPU
recipe, each in its own process, through accelerate's and transformers' real DeepSpeed code paths and
DeepSpeed 0.19's ZeRO-3 (two ranks on gloo: tests/support/gloo_deepspeed, the one change a CPU needs).

Checked: every stage trains in a fresh process on both ranks (pids differ between stages) with world size 2;
each stage's checkpoints hold DeepSpeed's ZeRO partitions of both ranks; stage 3 freezes the vision tower,
counts its parameters in full although ZeRO-3 has partitioned them (``ds_numel``) and leaves it
bit-identical; a stage interrupted after its first checkpoint resumes from it in a new launch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "support" / "gloo_deepspeed"


def _events(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _launch(args: list[str], tmp: Path, dbg: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLCURATE_TRAIN_DEBUG_DIR": str(dbg), "RLCURATE_TEST_GLOO_DEEPSPEED": "1",
           "PYTHONPATH": os.pathsep.join([str(SUPPORT), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_CACHE": str(tmp / "hf_cache"), "DS_BUILD_OPS": "0",
           "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "pipelines" / "accelerate" / "zero3.yaml"), "--num_processes", "2",
           "--mixed_precision", "no",  # the CPU recipe trains in fp32 (bf16 needs the recipe's bf16: true too)
           "-m", "training.cli", "staged", "--config", str(REPO / "pipelines" / "staged_cpu.yaml"), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_three_stages_one_zero3_launch_each_stage_its_own_process(tmp_path, tiny_qwen2_vl_dir):
    import importlib.util

    assert importlib.util.find_spec("deepspeed"), "DeepSpeed is missing: `make setup` installs the deepspeed extra"
    from safetensors.torch import load_file
    from test_train_grpo import write_rl_mm, write_rl_text
    from test_train_sft import write_sft_text

    sft = write_sft_text(tmp_path / "sft.parquet", n=6)
    rl_mm = write_rl_mm(tmp_path / "rl_mm.parquet", n=4)
    rl_text = write_rl_text(tmp_path / "rl_text.parquet", n=4)
    staged = tmp_path / "staged"
    dbg = tmp_path / "debug"
    ov = [f"model={tiny_qwen2_vl_dir}", f"staged.output_dir={staged}", f"staged.stages.0.data.train={sft}",
          f"staged.stages.1.data.train={rl_mm}", f"staged.stages.2.data.train={rl_text}",
          "sft.max_steps=2", "sft.save_steps=1", "grpo.max_steps=2", "grpo.save_steps=1",
          "grpo.max_completion_length=12", "grpo.rewards.length.budget=8", "sft.disable_tqdm=true",
          "grpo.disable_tqdm=true"]
    proc = _launch(ov, tmp_path, dbg)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    out = proc.stdout
    assert "launch: ZeRO-3 (environment)" in out and "every stage passed its checks" in out
    assert out.count("- in its own process") == 3  # printed by rank 0's driver only

    summary = json.loads((staged / "summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["trained"] * 3
    assert [s["steps"] for s in summary["stages"]] == [2, 2, 2]

    # every stage reports a DeepSpeed run over 2 ranks with the fp32 master in the ZeRO optimizer
    for s in summary["stages"]:
        run = json.loads((Path(s["checkpoint"]) / "result.json").read_text())["extra"]["run"]
        assert (run["distributed_type"], run["world_size"], run["master_dtype"]) == ("DEEPSPEED", 2, "torch.float32"), run

    # ZeRO: every checkpoint holds DeepSpeed's optimizer partitions of both ranks
    for name in ("cold_start", "mm_rl", "text_rl"):
        parts = sorted(p.name for p in (staged / name / "checkpoint-1").rglob("*optim_states.pt"))
        assert len(parts) == 2 and all("zero_pp_rank_" in p for p in parts), (name, parts)

    # both GRPO stages ran with world size 2, in new processes (stage 3's pids are not stage 2's)
    r0, r1 = _events(dbg / "rank0.jsonl"), _events(dbg / "rank1.jsonl")
    s0 = [e for e in r0 if e["event"] == "start"]
    s1 = [e for e in r1 if e["event"] == "start"]
    assert len(s0) == len(s1) == 2 and all(e["world_size"] == 2 for e in s0 + s1)
    assert s0[0]["pid"] != s0[1]["pid"] and s1[0]["pid"] != s1[1]["pid"]
    assert len({e["pid"] for e in s0 + s1}) == 4

    # stage 3: the vision tower is frozen, counted in full under ZeRO-3 partitioning, and unchanged
    vision = {k: v for k, v in load_file(str(tiny_qwen2_vl_dir / "model.safetensors")).items() if "visual" in k}
    res3 = json.loads((staged / "text_rl" / "final" / "result.json").read_text())
    assert res3["extra"]["frozen_vision_params"] == sum(v.numel() for v in vision.values()) > 0
    before = load_file(str(staged / "mm_rl" / "final" / "model.safetensors"))
    after = load_file(str(staged / "text_rl" / "final" / "model.safetensors"))
    vis = [k for k in before if "visual" in k]
    assert vis and all((before[k] == after[k]).all() for k in vis)
    assert any(not (before[k] == after[k]).all() for k in before if "visual" not in k)

    # an interrupted stage 3 (only checkpoint-1 left) resumes from it in a new launch; 1 and 2 are skipped
    stage3 = staged / "text_rl"
    (stage3 / "stage_done.json").unlink()
    shutil.rmtree(stage3 / "final")
    shutil.rmtree(stage3 / "checkpoint-2")
    proc = _launch(ov, tmp_path, dbg)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    again = json.loads((staged / "summary.json").read_text())
    assert [s["status"] for s in again["stages"]] == ["skipped (done earlier)"] * 2 + ["resumed"]
    marker = json.loads((stage3 / "stage_done.json").read_text())
    assert marker["result"]["resumed_from"].endswith("checkpoint-1") and marker["summary"]["steps"] == 2
