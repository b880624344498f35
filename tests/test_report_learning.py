"""curate report's learning section and VPS split, on small tables written here (the real run is
tests/test_demo.py): every number is the one the tables give."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.report.learning import learning_lines, learning_summary, paired_bootstrap, summary_text
from curation.report.run import model_facts, vps_split


def _scores(path, pass_rates, n=4):
    path.mkdir(parents=True)
    pq.write_table(pa.table({"problem_id": [f"q{i}" for i in range(len(pass_rates))],
                             "pass_rate": [float(x) for x in pass_rates], "n": [n] * len(pass_rates)}),
                   path / "scores.parquet")


def test_paired_bootstrap_interval_and_noise_flag():
    zero = paired_bootstrap(np.full(30, 0.5), np.full(30, 0.5))
    assert zero == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "within_noise": True}
    up = paired_bootstrap(np.zeros(40), np.ones(40) * 0.5)
    assert up["diff"] == 0.5 and not up["within_noise"]
    rng = np.random.default_rng(1)
    b, a = rng.random(40), rng.random(40)
    r = paired_bootstrap(b, a)
    assert r["lo"] < r["diff"] < r["hi"] and abs(r["diff"] - float(np.mean(a - b))) < 1e-12
    assert r == paired_bootstrap(b, a)  # seeded


def test_learning_summary_reads_the_tables(tmp_path):
    learn = tmp_path / "learn"
    before = [0.0, 0.25, 0.5, 0.25, 0.0, 0.75]
    _scores(learn / "eval_base", before)
    _scores(learn / "eval_vas", [0.25, 0.5, 0.75, 0.5, 0.25, 1.0])
    _scores(learn / "eval_uniform", before)  # unchanged: within noise
    for arm in ("vas", "uniform"):
        (learn / arm / "final").mkdir(parents=True)
        (learn / arm / "final" / "result.json").write_text(json.dumps(
            {"steps": 2, "train_rows": 9, "extra": {"groups": 8, "zero_var_groups": 3 if arm == "vas" else 5}}))
        (learn / arm / "final" / "trainer_state.json").write_text(json.dumps(
            {"global_step": 2, "log_history": [{"step": 1, "reward": 0.25}, {"step": 2, "reward": 0.5}]}))
    s = learning_summary(learn)
    assert s["heldout_problems"] == 6 and abs(s["before"] - np.mean(before)) < 1e-12
    v, u = s["arms"]["vas"], s["arms"]["uniform"]
    assert abs(v["diff"] - 0.25) < 1e-12 and not v["within_noise"] and v["lo"] > 0
    assert u["diff"] == 0.0 and u["within_noise"]
    assert v["rewards"] == [(1, 0.25), (2, 0.5)] and v["mean_reward"] == 0.375 and v["steps"] == 2
    assert abs(s["vas_minus_uniform"]["diff"] - 0.25) < 1e-12
    md = "\n".join(learning_lines(s))
    assert f"| vas | 2 | {v['before']:.3f} | {v['after']:.3f} |" in md and "within noise" in md
    assert "| 3/8 |" in md and "| 5/8 |" in md  # zero-variance groups per arm, from result.json
    assert "uniform" in summary_text(s) and "better beyond noise" in summary_text(s)
    assert learning_summary(tmp_path / "nothing") is None


def test_vps_split_groups_and_masses(tmp_path):
    p = np.array([0.0, 0.0, 0.5, 0.25, 1.0])
    tds = np.array([0.6, 0.4, 0.3, 0.2, 0.1])
    ovs = p * (1 - p)
    vps = 0.8 * 4 * ovs + 0.2 * tds  # normalised OVS
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"pass_rate": p, "ovs": ovs, "tds": tds, "vps": vps}), path)
    sp = vps_split(path, alpha=0.8, beta=0.2, normalize_ovs=True, group_size=4, lam=0.5)
    g = {r["group"]: r for r in sp["groups"]}
    assert [g[k]["prompts"] for k in ("p = 0", "0 < p < 1", "p = 1")] == [2, 2, 1]
    assert g["p = 0"]["mean_outcome_term"] == 0.0 and abs(g["p = 0"]["mean_tds_term"] - 0.1) < 1e-12
    assert abs(sum(r["vas_mass_run"] for r in sp["groups"]) - 1) < 1e-12
    # the normalised OVS moves VAS mass to the prompts with outcome variance, relative to MMR1's raw OVS
    assert g["0 < p < 1"]["vas_mass_run"] > g["0 < p < 1"]["vas_mass_paper"] > g["0 < p < 1"]["uniform_mass"]
    assert sp["zero_variance"]["run"] < sp["zero_variance"]["paper"]


def test_model_facts_reads_the_checkpoint_header_and_the_random_init_mark(tmp_path):
    """The report's training section names the model it started from: the parameter count is summed from the
    safetensors header and must equal the model's own count; the tiny builder marks its weights random."""
    from transformers import AutoModelForImageTextToText

    from curation.core.models import build_tiny_qwen2_vl

    d = build_tiny_qwen2_vl(tmp_path / "tiny")
    facts = model_facts(d)
    model = AutoModelForImageTextToText.from_pretrained(d)
    # tied embeddings are stored once
    assert facts["parameters"] == sum(p.numel() for p in model.parameters())
    assert facts["random_init"] is True and facts["architecture"] == "Qwen2VLForConditionalGeneration"
    model.save_pretrained(tmp_path / "trained")  # a checkpoint trained from it keeps the mark
    assert model_facts(tmp_path / "trained")["random_init"] is True
    assert model_facts(tmp_path / "nothing") is None
