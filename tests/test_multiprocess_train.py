"""`train grpo` under `accelerate launch` with two real CPU processes (gloo; pipelines/accelerate/ddp_cpu.yaml).

With ``RLCURATE_TRAIN_DEBUG_DIR`` set, every rank appends to ``rank<R>.jsonl``: the chunks its VAS sampler
drew, the dataset indices of its local slice of each generation batch, the gathered (keys, accuracy rewards,
texts) that the main process fed into the online VPS update, its own final VPS values, and every file it
saved.  Checked: identical sampler streams on both ranks; a prompt group split across the two ranks still
reaches the update whole; the VPS table written at the end equals a fresh single-process table replayed from
the gathered rollouts; both ranks end with the same table; only rank 0 writes (one checkpoint dir per save
step, one VPS table each, one vps_final.parquet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
G = 4  # num_generations
PER_DEVICE = 3  # rows per rank per step: a generation batch of 2 ranks x 3 x 2 steps = 12 rows = 3 prompts x 4


def write_rl_text(path: Path, n: int = 8) -> Path:
    """RL_TEXT rows from GSM8K train; the first half carries a `curate score` pass rate, the rest starts on
    the VPS prior."""
    from curation.core.io import write_parquet_atomic
    from curation.core.schema import to_table

    rows = []
    with open(DATA / "gsm8k" / "train.jsonl") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            d = json.loads(line)
            p = 0.25 if i < n // 2 else None
            rows.append({
                "problem_id": f"gsm8k-train-{i}", "source": "gsm8k",
                "prompt": [{"role": "user", "content": d["question"] + " Put the final answer in \\boxed{}."}],
                "answer": d["answer"].split("####")[-1].strip().replace(",", ""), "options": None,
                "pass_rate": p, "ovs": None if p is None else p * (1 - p), "tds": None if p is None else 0.4,
                "vps": None if p is None else 0.8 * p * (1 - p) + 0.2 * 0.4,
            })
    write_parquet_atomic(to_table(rows, "rl_text"), path)
    return path


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_two_process_grpo_sampler_vps_and_single_writer(tmp_path):
    from curation.core.models import build_tiny_qwen2
    from training.vps import VPSConfig, VPSTable

    model = build_tiny_qwen2(tmp_path / "tiny")
    data = write_rl_text(tmp_path / "rl.parquet")
    out = tmp_path / "out"
    vas = {"enabled": True, "lambda": 0.5, "refresh": "online", "alpha": 0.8, "beta": 0.2, "momentum": 0.5}
    grpo = {
        "output_dir": str(out), "num_generations": G, "per_device_train_batch_size": PER_DEVICE,
        "gradient_accumulation_steps": 2, "max_completion_length": 12, "max_steps": 2, "logging_steps": 1,
        "learning_rate": 1.0e-3, "beta": 0.0, "temperature": 1.0, "bf16": False, "use_cpu": True,
        "gradient_checkpointing": False, "save_strategy": "steps", "save_steps": 1, "report_to": "none",
        "seed": 0, "disable_tqdm": True, "data": {"train": str(data)}, "rewards": {"accuracy": 1.0}, "vas": vas,
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(model), "grpo": grpo}))
    dbg = tmp_path / "debug"
    env = {**os.environ, "RLCURATE_TRAIN_DEBUG_DIR": str(dbg), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "pipelines" / "accelerate" / "ddp_cpu.yaml"), "--num_processes", "2",
           "-m", "training.cli", "grpo", "--config", str(recipe)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    r0, r1 = _events(dbg / "rank0.jsonl"), _events(dbg / "rank1.jsonl")
    assert r0[0]["world_size"] == 2 and r1[0]["world_size"] == 2  # really two processes

    # 1. both ranks drew the same VAS index stream
    s0 = [(e["epoch"], e["indices"]) for e in r0 if e["event"] == "sampler_chunk"]
    s1 = [(e["epoch"], e["indices"]) for e in r1 if e["event"] == "sampler_chunk"]
    assert len(s0) >= 2 and s0 == s1
    assert all(len(set(idx)) == len(idx) == 12 // G for _, idx in s0)  # 3 unique prompts per generation batch

    # 2. each rank scored its own slice; the update saw both slices, in rank order, and a group split across
    #    the ranks arrived whole (all G rewards)
    b0 = [e["local_keys"] for e in r0 if e["event"] == "batch"]
    b1 = [e["local_keys"] for e in r1 if e["event"] == "batch"]
    updates = [e for e in r0 if e["event"] == "update"]
    assert not [e for e in r1 if e["event"] == "update"]  # logged by the main process only
    assert len(b0) == len(b1) == len(updates) == 2  # one generation batch per optimizer step (2 micro-steps)
    split = 0
    for k0, k1, u in zip(b0, b1, updates):
        assert len(k0) == len(k1) == PER_DEVICE * 2
        assert u["keys"] == k0 + k1 and len(u["rewards"]) == len(u["texts"]) == 12 and u["group_size"] == G
        split += len(set(k0) & set(k1))
    assert split >= 1, "the test setup should split at least one prompt group across the ranks"
    # gathered in rank order = the sampler's order: each drawn prompt with its G rollouts consecutive
    assert [u["keys"][::G] for u in updates] == [idx for _, idx in s0[: len(updates)]]

    # 3. the written table == a fresh single-process table replayed from the gathered rollouts
    fresh = VPSTable.from_dataset(pq.read_table(data),
                                  config=VPSConfig(alpha=0.8, beta=0.2, momentum=0.5, tds_metric="edit"))
    for u in updates:
        fresh.update_from_flat(u["keys"], u["rewards"], u["texts"], group_size=u["group_size"])
    written = pq.read_table(out / "vps_final.parquet")
    cols = ["index", "problem_id", "pass_rate", "tds", "vps", "n_observed", "n_groups", "scored"]
    assert written.select(cols).equals(fresh.to_table().select(cols))
    obs = [r for r in written.to_pylist() if r["n_groups"]]
    assert obs and all(r["n_observed"] == G * r["n_groups"] for r in obs)  # whole groups, never a rank's half
    assert sum(r["n_groups"] for r in obs) == 2 * 3
    # both ranks hold the same table at the end
    f0 = [e["vps"] for e in r0 if e["event"] == "final_vps"]
    f1 = [e["vps"] for e in r1 if e["event"] == "final_vps"]
    assert f0 and f0 == f1 == [written.column("vps").to_pylist()]

    # 4. one writer: rank 0 saved everything, rank 1 nothing; one checkpoint per save step, one table each
    assert [e for e in r0 if e["event"] == "save"] and not [e for e in r1 if e["event"] == "save"]
    ckpts = sorted(p.name for p in out.glob("checkpoint-*"))
    assert ckpts == ["checkpoint-1", "checkpoint-2"]
    for c in ckpts:
        assert [p.name for p in (out / c).glob("vps_table*.parquet")] == ["vps_table.parquet"]
    assert [p.name for p in out.glob("vps_final*.parquet")] == ["vps_final.parquet"]
    assert (out / "final" / "result.json").exists() and (out / "final" / "model.safetensors").exists()
    assert not list(out.rglob(".*.tmp"))


@pytest.mark.slow
def test_two_process_staged_sft_pad_grpo_frozen_vision(tmp_path, tiny_qwen2_vl_dir):
    """The shipped CPU staged recipe (SFT -> multimodal GRPO with PAD -> text GRPO, vision frozen) under two
    processes.  PAD keeps a different number of rollouts on each rank; every rank must still end with the same
    row count (TRL gathers per-row tensors) and join the token-count gather - before the fix this aborted in
    gloo with a collective size mismatch.  Each stage's final checkpoint must be complete before the next
    stage loads it on every rank, and only rank 0 writes the stage markers and checkpoints' VPS tables."""
    from safetensors.torch import load_file
    from test_train_grpo import write_rl_mm
    from test_train_grpo import write_rl_text as write_rl_text_small
    from test_train_sft import write_sft_text

    sft = write_sft_text(tmp_path / "sft.parquet", n=6)
    rl_mm = write_rl_mm(tmp_path / "rl_mm.parquet", n=4)
    rl_text = write_rl_text_small(tmp_path / "rl_text.parquet", n=4)
    staged = tmp_path / "staged"
    dbg = tmp_path / "debug"
    overrides = [
        f"model={tiny_qwen2_vl_dir}", f"staged.output_dir={staged}", f"staged.stages.0.data.train={sft}",
        f"staged.stages.1.data.train={rl_mm}", f"staged.stages.2.data.train={rl_text}",
        "sft.max_steps=2", "sft.save_steps=1", "grpo.max_steps=2", "grpo.save_steps=1",
        "grpo.max_completion_length=12", "grpo.rewards.length.budget=8", "sft.disable_tqdm=true",
        "grpo.disable_tqdm=true",
    ]
    env = {**os.environ, "RLCURATE_TRAIN_DEBUG_DIR": str(dbg), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "pipelines" / "accelerate" / "ddp_cpu.yaml"), "--num_processes", "2",
           "-m", "training.cli", "staged", "--config", str(REPO / "pipelines" / "staged_cpu.yaml"), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count("train staged") == 2  # header + table, printed by rank 0 only

    summary = json.loads((staged / "summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["trained"] * 3
    mm = json.loads((staged / "mm_rl" / "final" / "result.json").read_text())["extra"]
    # PAD counts are summed over both ranks: 2 steps x 2 ranks x (4 per device x 2 steps per generation)
    assert mm["pad"] and mm["pad_total"] == 2 * 2 * 8 and 0 <= mm["pad_kept"] <= mm["pad_total"]
    # stage 3 froze the vision tower: bit-identical to stage 2's, under DDP too
    before = load_file(str(staged / "mm_rl" / "final" / "model.safetensors"))
    after = load_file(str(staged / "text_rl" / "final" / "model.safetensors"))
    vis = [k for k in before if "visual" in k]
    assert vis and all((before[k] == after[k]).all() for k in vis)
    r0, r1 = _events(dbg / "rank0.jsonl"), _events(dbg / "rank1.jsonl")
    assert [e for e in r0 if e["event"] == "save"] and not [e for e in r1 if e["event"] == "save"]
    f0 = [e["vps"] for e in r0 if e["event"] == "final_vps"]
    assert len(f0) == 2 and f0 == [e["vps"] for e in r1 if e["event"] == "final_vps"]  # both GRPO stages


# --- resume mid-epoch under two processes (accelerate wraps the sampler three levels deep) --------------------


def _launch(cmd_tail: list[str], dbg: Path, tmp_path: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLCURATE_TRAIN_DEBUG_DIR": str(dbg), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "pipelines" / "accelerate" / "ddp_cpu.yaml"), "--num_processes", "2",
           "-m", "training.cli", *cmd_tail]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _resume_copy(out: Path, step: int, out2: Path) -> None:
    """A fresh output dir holding only ``checkpoint-<step>`` of ``out`` (as if the run had died after it)."""
    import shutil

    out2.mkdir()
    shutil.copytree(out / f"checkpoint-{step}", out2 / f"checkpoint-{step}")


def _full_and_resumed(tmp_path: Path, kind: str, model: Path, section: dict, step: int) -> tuple[Path, Path]:
    """Run the recipe uninterrupted (debug events in ``dbg_full``), then again from a copy of its
    ``checkpoint-<step>`` only (``dbg_resumed``); returns both output dirs."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(model), kind: section}))
    out, out2 = tmp_path / "full", tmp_path / "resumed"
    _launch([kind, "--config", str(recipe), f"{kind}.output_dir={out}"], tmp_path / "dbg_full", tmp_path)
    _resume_copy(out, step, out2)
    _launch([kind, "--config", str(recipe), f"{kind}.output_dir={out2}"], tmp_path / "dbg_resumed", tmp_path)
    return out, out2


def _same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return ta.keys() == tb.keys() and all(bool((ta[k] == tb[k]).all()) for k in ta)


@pytest.mark.slow
def test_two_process_grpo_resume_mid_epoch_draws_the_resumed_epoch(tmp_path):
    """8 prompts, 4 per generation batch -> 2 optimizer steps per epoch, 6 steps = 3 epochs.  Resuming from
    checkpoint-3 (mid-epoch 2) under two processes, accelerate hands the trainer SkipBatchSampler ->
    BatchSamplerShard -> BatchSampler -> VASSampler; the sampler must still be told it is in epoch 1, so the
    resumed run draws (uniform permutation and VAS draws alike) exactly what the uninterrupted run drew.
    Checked on the debug events of both ranks: the sampler's epochs and chunks, the local prompt slices of
    every step after the resume, and the final weights (the same data in the same order from the same
    checkpoint and RNG state)."""
    from curation.core.models import build_tiny_qwen2

    model = build_tiny_qwen2(tmp_path / "tiny")
    data = write_rl_text(tmp_path / "rl.parquet", n=8)
    # static weights (refresh none, no re-score): the stream depends only on (seed, epoch, chunk)
    vas = {"enabled": True, "lambda": 0.5, "refresh": "none"}
    grpo = {
        "num_generations": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
        "max_completion_length": 8, "max_steps": 6, "logging_steps": 1, "learning_rate": 1.0e-3, "beta": 0.0,
        "temperature": 1.0, "bf16": False, "use_cpu": True, "gradient_checkpointing": False,
        "save_strategy": "steps", "save_steps": 3, "report_to": "none", "seed": 0, "disable_tqdm": True,
        "data": {"train": str(data)}, "rewards": {"accuracy": 1.0}, "vas": vas,
    }
    out, out2 = _full_and_resumed(tmp_path, "grpo", model, grpo, 3)

    for rank in (0, 1):
        full = _events(tmp_path / "dbg_full" / f"rank{rank}.jsonl")
        res = _events(tmp_path / "dbg_resumed" / f"rank{rank}.jsonl")
        chunks_full = [(e["epoch"], e["indices"], e["is_vas"]) for e in full if e["event"] == "sampler_chunk"]
        chunks_res = [(e["epoch"], e["indices"], e["is_vas"]) for e in res if e["event"] == "sampler_chunk"]
        assert [c[0] for c in chunks_full] == [0, 0, 1, 1, 2, 2]
        assert chunks_full[0][1] != chunks_full[2][1]  # epochs differ, so replaying epoch 0 would show
        # the resumed run draws epoch 1 (both chunks: the skipped one too) and epoch 2, as the full run did
        assert chunks_res == chunks_full[2:], (rank, chunks_res)
        batches_full = [(e["step"], e["local_keys"]) for e in full if e["event"] == "batch"]
        batches_res = [(e["step"], e["local_keys"]) for e in res if e["event"] == "batch"]
        assert [s for s, _ in batches_full] == [0, 1, 2, 3, 4, 5]
        assert batches_res == batches_full[3:]
    assert (out2 / "final" / "result.json").exists()
    assert _same_weights(out / "final", out2 / "final")


@pytest.mark.slow
def test_two_process_sft_resume_mid_epoch_draws_the_resumed_epoch(tmp_path):
    """SFT with the VAS epoch sampler: 8 rows, 2 processes x 1 row per step -> 4 steps per epoch, 12 steps = 3
    epochs; resume from checkpoint-6 (mid-epoch 2).  The resumed run must order epoch 1 and epoch 2 exactly as
    the uninterrupted run did, and end with the same weights."""
    from test_train_sft import write_sft_text

    from curation.core.models import build_tiny_qwen2

    model = build_tiny_qwen2(tmp_path / "tiny")
    data = write_sft_text(tmp_path / "sft.parquet", n=8, vps=[0.05, 0.1, 0.2, 0.25, 0.3, 0.15, 0.0, 0.22])
    sft = {
        "max_length": 512, "learning_rate": 1.0e-3, "max_steps": 12, "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1, "logging_steps": 1, "save_strategy": "steps", "save_steps": 6,
        "gradient_checkpointing": False, "bf16": False, "use_cpu": True, "dataset_num_proc": None, "seed": 0,
        "report_to": "none", "disable_tqdm": True, "data": {"train": str(data)}, "vas": {"lambda": 0.5},
    }
    out, out2 = _full_and_resumed(tmp_path, "sft", model, sft, 6)

    for rank in (0, 1):
        full = [(e["epoch"], e["indices"]) for e in _events(tmp_path / "dbg_full" / f"rank{rank}.jsonl")
                if e["event"] == "sampler_epoch"]
        res = [(e["epoch"], e["indices"]) for e in _events(tmp_path / "dbg_resumed" / f"rank{rank}.jsonl")
               if e["event"] == "sampler_epoch"]
        assert [e for e, _ in full] == [0, 1, 2] and full[0][1] != full[1][1]
        assert res == full[1:], (rank, res)
    assert _same_weights(out / "final", out2 / "final")
