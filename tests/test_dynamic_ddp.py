"""Dynamic sampling under two real processes (gloo, pipelines/accelerate/ddp_cpu.yaml): skip and refill keep
every rank's shapes equal and every collective in step (tests/support/dynamic_ddp.py is the driver)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
G = 4


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_two_processes_skip_and_refill_equal_shapes_same_rounds(tmp_path):
    """6 rows per rank per generation batch (3 prompts x 4, one group split over the ranks).  Checked on both
    ranks' debug events: identical sampler streams (skip included) and refill draws; the same number of refill
    rounds and rollouts per generation batch on both ranks (decided from gathered numbers); every refill round
    splits a fresh draw (no prompt of the batch again) evenly over the ranks; each rank's merged batch has 6 rows
    and its optimizer-step slices 3 rows each; the budget is never exceeded; the run finishes (no hang) with the
    same VPS table and the same weights on both ranks."""
    from curation.core.models import build_tiny_qwen2

    model = build_tiny_qwen2(tmp_path / "tiny")
    dbg = tmp_path / "debug"
    env = {**os.environ, "RLCURATE_TRAIN_DEBUG_DIR": str(dbg), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "pipelines" / "accelerate" / "ddp_cpu.yaml"), "--num_processes", "2",
           str(REPO / "tests" / "support" / "dynamic_ddp.py"), str(model), str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    r0, r1 = _events(dbg / "rank0.jsonl"), _events(dbg / "rank1.jsonl")
    f0, f1 = [e for e in r0 if e["event"] == "final"], [e for e in r1 if e["event"] == "final"]
    assert f0[0]["world_size"] == 2 and f1[0]["world_size"] == 2

    # the same sampler stream (the skip rule's replacements included) on both ranks
    s0 = [(e["epoch"], e["indices"]) for e in r0 if e["event"] == "sampler_chunk"]
    assert s0 and s0 == [(e["epoch"], e["indices"]) for e in r1 if e["event"] == "sampler_chunk"]
    assert f0[0]["run_stats"]["groups_skipped"] + f0[0]["run_stats"]["groups_explored"] > 0

    # the same rounds, rollouts and row counts per generation batch on both ranks
    d0, d1 = [e for e in r0 if e["event"] == "dynamic"], [e for e in r1 if e["event"] == "dynamic"]
    assert len(d0) == len(d1) == 3
    for a, b in zip(d0, d1):
        assert (a["rounds"], a["rollouts"]) == (b["rounds"], b["rollouts"])
        assert a["local_rows"] == b["local_rows"] == 6 and a["rollouts"] <= 48
        assert a["informative"] + a["fillers"] == b["informative"] + b["fillers"] == 6
        for k in a["shapes"]:
            assert a["shapes"][k][:1] == b["shapes"][k][:1], k  # equal row counts of every per-row tensor
    assert sum(e["rounds"] - 1 for e in d0) > 0, "the setup should need at least one refill round"

    # each generation batch: the first round is the sampler's chunk, refill rounds are fresh prompts split evenly
    b0 = [e for e in r0 if e["event"] == "batch"]
    b1 = [e for e in r1 if e["event"] == "batch"]
    assert len(b0) == len(b1) == sum(e["rounds"] for e in d0)
    i = 0
    for d in d0:
        seen: set[int] = set()
        for r in range(d["rounds"]):
            k0, k1 = b0[i]["local_keys"], b1[i]["local_keys"]
            assert b0[i]["refill"] == b1[i]["refill"] == (r > 0)
            assert len(k0) == len(k1)
            both = k0 + k1
            prompts = both[::G]
            assert both == [p for p in prompts for _ in range(G)] and len(set(prompts)) == len(prompts)
            if r > 0:
                assert not (set(prompts) & seen)  # a refill never draws a prompt of this batch again
            seen |= set(prompts)
            i += 1

    # every optimizer step: steps_per_generation = 2 slices of 3 rows on each rank
    sl0 = [e for e in r0 if e["event"] == "slices"]
    sl1 = [e for e in r1 if e["event"] == "slices"]
    assert len(sl0) == len(sl1) == 3
    assert all(e["rows"] == [3, 3] for e in sl0 + sl1)
    # the same table and, through DDP, the same weights at the end
    assert f0[0]["vps"] == f1[0]["vps"]
    assert f0[0]["checksum"] == f1[0]["checksum"]
