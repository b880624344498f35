"""`train grpo`: VASGRPOTrainer on real tiny models and real data (GSM8K text, MATH-Vision images).

What is checked against the real thing: the VAS sampler mix per generation batch, the online VPS refresh
(the EMA values the table ends with follow from the observed accuracy rewards), PAD's empty-batch no-op and
non-empty selection, images reaching the vision tower, re-scoring, checkpoints carrying the VPS table, and the
`train grpo` command."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file
from test_train_sft import gsm8k_rows, mathvision_rows
from transformers import TrainerCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def write_rl_text(path: Path, n: int = 8, scored: set[int] = frozenset()) -> Path:
    """RL_TEXT rows from GSM8K; rows in ``scored`` carry an initial pass_rate 0.5 / tds 0.3 (as if from
    `curate score`), the others none (they start on the VPS prior)."""
    from curation.core.io import write_parquet_atomic
    from curation.core.schema import to_table

    rows = []
    for k, r in enumerate(gsm8k_rows(n, start=100)):
        p = 0.5 if k in scored else None
        rows.append({
            "problem_id": f"gsm8k-{r['i']}", "source": "gsm8k",
            "prompt": [{"role": "user", "content": r["question"] + " Put the final answer in \\boxed{}."}],
            "answer": r["answer"], "options": None,
            "pass_rate": p, "ovs": None if p is None else p * (1 - p), "tds": None if p is None else 0.3,
            "vps": None if p is None else 0.8 * p * (1 - p) + 0.2 * 0.3,
        })
    write_parquet_atomic(to_table(rows, "rl_text"), path)
    return path


def write_rl_mm(path: Path, n: int = 8) -> Path:
    from curation.core.io import write_parquet_atomic
    from curation.core.schema import to_table

    rows = []
    for r in mathvision_rows(n):
        q = r["question"].replace("<image1>", "").strip()
        if r["options"]:
            q += "\nChoices: " + ", ".join(r["options"])
        rows.append({
            "problem_id": f"mathvision-{r['id']}", "source": "math_vision",
            "prompt": [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": q}]}],
            "images": [{"bytes": r["image_bytes"], "path": r["image_name"]}],
            "answer": r["answer"], "options": r["options"] or None,
            "pass_rate": None, "ovs": None, "tds": None, "vps": None,
        })
    write_parquet_atomic(to_table(rows, "rl_mm"), path)
    return path


def cpu_grpo_section(out: Path, data: Path, **over) -> dict:
    sec = {
        "output_dir": str(out), "num_generations": 4, "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2, "max_completion_length": 16, "max_steps": 3, "logging_steps": 1,
        "learning_rate": 1.0e-3, "beta": 0.0, "temperature": 1.0, "bf16": False, "use_cpu": True,
        "gradient_checkpointing": False, "save_strategy": "no", "report_to": "none", "seed": 0,
        "disable_tqdm": True, "data": {"train": str(data)}, "rewards": {"accuracy": 1.0},
    }
    sec.update(over)
    return sec


def _tensors(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


def test_initial_vps_from_a_scores_table(tmp_path):
    """vas.scores (a `curate score` table) sets the starting pass rate / TDS of the prompts it names,
    joined on problem_id; the others start on the prior."""
    from curation.core.io import write_parquet_atomic
    from curation.core.schema import to_table
    from training.config import build_grpo_recipe
    from training.grpo import _load_rl_dataset, build_vps_table

    data = write_rl_text(tmp_path / "rl.parquet", n=4)
    pids = [f"gsm8k-{r['i']}" for r in gsm8k_rows(4, start=100)]
    scores = [{"problem_id": pids[1], "model": "m", "n": 8, "n_correct": 2, "pass_rate": 0.25, "ovs": 0.1875,
               "tds": 0.4, "vps": 0.8 * 0.1875 + 0.2 * 0.4}]
    write_parquet_atomic(to_table(scores, "scores"), tmp_path / "scores.parquet")
    sec = cpu_grpo_section(tmp_path / "o", data, vas={"enabled": True, "scores": str(tmp_path / "scores.parquet")})
    recipe = build_grpo_recipe(sec, "unused")
    table = build_vps_table(_load_rl_dataset(recipe), recipe)
    got = table.get(pids[1])
    assert got["pass_rate"] == 0.25 and got["tds"] == 0.4 and got["scored"]
    assert got["vps"] == pytest.approx(0.8 * 0.1875 + 0.2 * 0.4)
    assert not table.get(pids[0])["scored"] and table.get(pids[0])["pass_rate"] == 0.5


def test_online_refresh_needs_an_accuracy_reward(tmp_path, tiny_qwen2_dir):
    from training.config import build_grpo_recipe
    from training.grpo import train_grpo

    data = write_rl_text(tmp_path / "rl.parquet", n=4)
    r = build_grpo_recipe(cpu_grpo_section(tmp_path / "o", data, rewards={"format": 1.0},
                                           vas={"enabled": True}), str(tiny_qwen2_dir))
    with pytest.raises(ValueError, match="vas.refresh=online needs an accuracy reward"):
        train_grpo(r)


@pytest.mark.slow
def test_train_grpo_cli_text_vas_online_refresh_and_empty_pad(tmp_path, tiny_qwen2_dir):
    """`train grpo` on GSM8K with a tiny random Qwen2: every completion is wrong, so every group has zero
    reward variance.  Then (a) the online VPS table must end exactly at the EMA of the observed pass rates
    (0 each time): scored prompts p = 0.5 * 0.5**n_groups, unscored observed prompts p = 0 (first observation
    replaces the prior); (b) PAD selects nothing in every batch and the update is a no-op (weights
    unchanged); (c) the sampler mix is lambda = 0.5 of each 2-prompt batch."""
    from typer.testing import CliRunner

    from training.cli import app

    data = write_rl_text(tmp_path / "rl.parquet", n=8, scored={0, 1, 2, 3})
    recipe = tmp_path / "recipe.yaml"
    sec = cpu_grpo_section(tmp_path / "out", data)
    import yaml

    recipe.write_text(yaml.safe_dump({"model": str(tiny_qwen2_dir), "grpo": sec}))
    res = CliRunner().invoke(app, ["grpo", "--config", str(recipe), "grpo.vas.enabled=true",
                                   "--set", "grpo.vas.lambda=0.5", "--set", "grpo.pad.enabled=true",
                                   "grpo.pad.rho=0.5"])
    assert res.exit_code == 0, res.output
    assert "VAS: 3 prompts drawn by VPS, 3 uniformly" in res.output
    assert "PAD: kept 0/24 rollouts, 3 empty batches" in res.output
    result = json.loads((tmp_path / "out" / "final" / "result.json").read_text())
    assert result["steps"] == 3 and result["zero_variance_frac"] == 1.0
    ex = result["extra"]
    assert ex["groups"] == 6 and ex["n_vas"] == 3 and ex["n_uniform"] == 3 and ex["pad_empty"] == 3

    # (a) the table against the EMA of what was observed
    table = pq.read_table(tmp_path / "out" / "vps_final.parquet").to_pylist()
    assert sum(r["n_groups"] for r in table) == 6
    for r in table:
        if r["n_groups"] == 0:
            expect = 0.5  # scored rows keep their score, unscored rows keep the prior (0.5)
        elif r["index"] < 4:
            expect = 0.5 * 0.5 ** r["n_groups"]  # momentum 0.5, observed p_hat = 0
        else:
            expect = 0.0
        assert r["pass_rate"] == pytest.approx(expect), r
        assert r["vps"] == pytest.approx(0.8 * r["pass_rate"] * (1 - r["pass_rate"]) + 0.2 * r["tds"])
    # (b) empty PAD batches leave the weights untouched
    before, after = _tensors(tiny_qwen2_dir), _tensors(tmp_path / "out" / "final")
    assert all((before[k] == after[k]).all() for k in before)
    # logged per step: reward components, zero-variance fraction, VPS stats, sampler mix, PAD
    logged = set(ex["logged_metrics"])
    for key in ("rewards/accuracy_reward/mean", "vas/zero_variance_frac", "vas/zero_variance_frac_accuracy",
                "vps/mean", "vps/min", "vps/max", "vps/pass_rate_mean", "vas/batch_n_vas", "vas/batch_n_uniform",
                "pad/kept_frac", "pad/empty", "frac_reward_zero_std"):
        assert key in logged, key
    assert result["final_reward"] == 0.0


@pytest.mark.slow
def test_train_grpo_vl_images_pad_rescore_and_checkpoint(tmp_path, tiny_qwen2_vl_dir):
    """Tiny Qwen2-VL on MATH-Vision images: with a length reward the groups have variance, PAD keeps at most
    ceil(rho N) rollouts per batch, the kept rollouts move the vision tower (images are in the forward
    pass), every prompt is re-scored at start and after step 1, and checkpoints carry the VPS table."""
    from transformers import AutoModelForImageTextToText

    from training.config import build_grpo_recipe
    from training.grpo import VPS_CKPT_FILE, train_grpo

    data = write_rl_mm(tmp_path / "rl_mm.parquet", n=8)
    sec = cpu_grpo_section(
        tmp_path / "o", data, max_steps=2, save_strategy="steps", save_steps=1,
        rewards={"accuracy": 1.0, "length": {"weight": 1.0, "budget": 8}},
        vas={"enabled": True, "lambda": 0.5, "score_at_start": True, "rescore_every": 1},
        pad={"enabled": True, "rho": 0.5, "tau_start": 1.0, "tau_end": 0.3},
    )
    notes: list[str] = []
    res = train_grpo(build_grpo_recipe(sec, str(tiny_qwen2_vl_dir)), report=notes.append)
    assert res.steps == 2
    assert any(n.startswith("scored 8 prompts x 4") for n in notes)
    ex = res.extra
    assert ex["rescores"] == 1  # after step 1 (the start scoring is not counted)
    assert ex["vps"]["observed_frac"] == 1.0
    k = math.ceil(0.5 * 8)
    assert 0 < ex["pad_kept"] <= 2 * k and ex["pad_total"] == 16
    before, after = _tensors(tiny_qwen2_vl_dir), _tensors(Path(res.final_dir))
    vis = [n for n in before if "visual" in n]
    assert vis and any(not (before[n] == after[n]).all() for n in vis)
    for step in (1, 2):
        assert (tmp_path / "o" / f"checkpoint-{step}" / VPS_CKPT_FILE).exists()
    AutoModelForImageTextToText.from_pretrained(res.final_dir)
    from curation.core.models import load_processor

    assert load_processor(res.final_dir).image_processor is not None


@pytest.mark.slow
def test_vas_lowers_zero_variance_fraction_smollm2(tmp_path, smollm2_dir, capsys):
    """The measured effect (bench/vas_effect.py): real SmolLM2-135M, 16 generated additions (1-3 digit
    operands), same data and seed, 8 GRPO steps x 2 prompts x 4 rollouts each; VAS (lambda = 1, initial
    scores from a scoring pass, online refresh) must train on fewer zero-variance groups than uniform
    sampling.  Measured on the dev machine: uniform 13/16 = 0.81, VAS 7/16 = 0.44 (10 steps: 15/20 = 0.75
    vs 8/20 = 0.40; 12 steps, the bench default: 18/24 = 0.75 vs 9/24 = 0.375).  Only the direction is
    asserted."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vas_effect", REPO / "bench" / "vas_effect.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rep = mod.run_experiment(tmp_path, steps=8, lam=1.0, seed=0, model=str(smollm2_dir))
    u, v = rep["uniform"], rep["vas"]
    with capsys.disabled():
        print(f"\nzero-variance groups: uniform {u['zero_variance_groups']}/{u['groups']} = "
              f"{u['zero_variance_frac']:.3f}, VAS {v['zero_variance_groups']}/{v['groups']} = "
              f"{v['zero_variance_frac']:.3f}; pass rate by digits {rep['pass_rate_by_digits']}")
    assert u["groups"] == v["groups"] == 16
    assert v["n_vas"] == 16 and v["n_uniform"] == 0  # lambda = 1: every prompt drawn by VPS
    assert rep["pass_rate_by_digits"][1] > rep["pass_rate_by_digits"][3]  # a real spread of difficulty
    assert v["zero_variance_frac"] < u["zero_variance_frac"]


# --- issue 13: correctness of the trainer where users lean on it --------------------------------------------------


@pytest.mark.parametrize("rewards", [{"format": 1.0}, {"format": 1.0, "length": {"weight": 0.5, "budget": 8}}])
@pytest.mark.parametrize("vas", [{"refresh": "none", "rescore_every": 2}, {"refresh": "none", "score_at_start": True}])
def test_rescoring_without_an_accuracy_reward_is_refused_at_start(tmp_path, tiny_qwen2_dir, rewards, vas):
    """Re-scoring sets pass rates from the accuracy reward; without one it would take the format reward for the
    pass rate (one reward function) or crash T steps in (two).  Refused before any training, by `train grpo`
    and by the trainer itself."""
    from training.config import build_grpo_recipe
    from training.grpo import build_grpo_trainer, train_grpo

    data = write_rl_text(tmp_path / "rl.parquet", n=4)
    r = build_grpo_recipe(cpu_grpo_section(tmp_path / "o", data, max_steps=1, rewards=rewards,
                                           vas={"enabled": True, **vas}), str(tiny_qwen2_dir))
    with pytest.raises(ValueError, match="needs an accuracy reward"):
        train_grpo(r)
    assert not (tmp_path / "o" / "final").exists()
    with pytest.raises(ValueError, match="needs an accuracy reward"):
        build_grpo_trainer(r)


def test_rescore_leaves_nothing_in_the_next_steps_logs(tmp_path, tiny_qwen2_dir):
    """The accuracy reward logs verdict fractions (log_metric) and extracted answers (log_extra) into TRL's
    pending buffers, which the next training batch flushes into its metrics and completions table.  A re-score
    of the whole set must leave those buffers, the step's metrics and the token counter as they were (only
    vas/rescore_seconds is added), while the table does get every prompt's fresh pass rate."""
    import copy

    from training.config import build_grpo_recipe
    from training.grpo import build_grpo_trainer

    data = write_rl_text(tmp_path / "rl.parquet", n=4)
    r = build_grpo_recipe(cpu_grpo_section(tmp_path / "o", data, max_completion_length=8,
                                           vas={"enabled": True, "refresh": "none", "rescore_every": 1}),
                          str(tiny_qwen2_dir))
    tr = build_grpo_trainer(r)
    tr.model.train()
    tr._metrics["train"]["reward"].append(0.25)  # as if a training batch had been logged before
    before = copy.deepcopy((dict(tr._metrics["train"]), dict(tr._pending_metrics), dict(tr._pending_extra_logs)))
    tokens = tr.state.num_input_tokens_seen
    tr.rescore_all()
    metrics = dict(tr._metrics["train"])
    assert len(metrics.pop("vas/rescore_seconds")) == 1
    assert (metrics, dict(tr._pending_metrics), dict(tr._pending_extra_logs)) == before
    assert tr.state.num_input_tokens_seen == tokens
    assert tr.vps_table.stats()["observed_frac"] == 1.0


def test_shuffle_dataset_false_keeps_dataset_order_with_vas(tmp_path, tiny_qwen2_dir):
    """GRPOConfig(shuffle_dataset=False): with VAS on and lambda = 0 the trainer's sampler is TRL's
    RepeatSampler(shuffle=False) stream exactly; with lambda = 0.5 the uniform part walks the dataset in order."""
    from trl.trainer.utils import RepeatSampler

    from training.config import build_grpo_recipe
    from training.grpo import build_grpo_trainer

    data = write_rl_text(tmp_path / "rl.parquet", n=8)
    for lam in (0.0, 0.5):
        r = build_grpo_recipe(cpu_grpo_section(tmp_path / "o", data, shuffle_dataset=False,
                                               vas={"enabled": True, "lambda": lam}), str(tiny_qwen2_dir))
        tr = build_grpo_trainer(r)
        ours = tr._get_train_sampler()
        trl = RepeatSampler(tr.train_dataset, mini_repeat_count=4, batch_size=2, repeat_count=2, shuffle=False,
                            seed=0)
        stream = list(ours)
        if lam == 0.0:
            assert stream == list(trl)
            assert stream[:16] == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4  # prompts 0, 1 first, in order
        else:
            uniform = [i for c, flags in ours.iter_chunks(0) for i, v in zip(c, flags) if not v]
            assert uniform == list(range(4))


class _RunStateAtTrainBegin(TrainerCallback):
    """What the trainer holds when training (re)starts - after ``train()`` restored a checkpoint."""

    trainer = None
    seen: dict = {}

    def on_train_begin(self, args, state, control, **kw):
        t = self.trainer
        self.seen = {"table": t.vps_table.to_table(), "run_stats": dict(t.run_stats),
                     "pad_gen": t._pad_gen.get_state().clone(), "block": t._last_rescore_block,
                     "step": state.global_step}


@pytest.mark.slow
def test_resume_restores_vps_table_run_state_and_rescore_schedule(tmp_path, tiny_qwen2_dir, monkeypatch):
    """A 4-step run with online refresh, PAD and a re-score every 2 steps (after step 2), checkpointed each step.
    (a) `VASGRPOTrainer.train(resume_from_checkpoint=checkpoint-3)` - not only the `train grpo` wrapper - starts
    from the checkpoint's VPS table, run statistics, re-score schedule and PAD generator.  (b) Resuming
    `train grpo` from checkpoint-3 does not re-score again (the uninterrupted run re-scored once, after step 2)
    and reports the whole run's statistics.  (c) A checkpoint without its VPS table resumes with a warning."""
    import base64
    import shutil

    import torch

    from training.config import build_grpo_recipe
    from training.grpo import RUN_STATE_FILE, VPS_CKPT_FILE, build_grpo_trainer, train_grpo

    data = write_rl_text(tmp_path / "rl.parquet", n=8, scored={0, 1})
    sec = dict(max_steps=4, max_completion_length=8, save_strategy="steps", save_steps=1,
               rewards={"accuracy": 1.0, "length": {"weight": 1.0, "budget": 4}},
               vas={"enabled": True, "lambda": 0.5, "refresh": "online", "rescore_every": 2},
               pad={"enabled": True, "rho": 0.5})
    dbg = tmp_path / "dbg"
    monkeypatch.setenv("RLCURATE_TRAIN_DEBUG_DIR", str(dbg / "full"))
    full = train_grpo(build_grpo_recipe(cpu_grpo_section(tmp_path / "full", data, **sec), str(tiny_qwen2_dir)))
    rescored = [e["step"] for e in _events(dbg / "full") if e["event"] == "rescore"]
    assert rescored == [2] and full.extra["rescores"] == 1
    ck = tmp_path / "full" / "checkpoint-3"
    saved = json.loads((ck / RUN_STATE_FILE).read_text())
    assert saved["last_rescore_block"] == 1 and saved["run_stats"]["groups"] == 3 * 2
    assert saved["run_stats"]["pad_total"] == 3 * 8 and saved["run_stats"]["rescores"] == 1

    # (a) the trainer class restores everything itself
    for name in ("direct", "cli", "no_table"):
        (tmp_path / name).mkdir()
        shutil.copytree(ck, tmp_path / name / "checkpoint-3")
    r = build_grpo_recipe(cpu_grpo_section(tmp_path / "direct", data, **sec), str(tiny_qwen2_dir))
    snap = _RunStateAtTrainBegin()
    tr = build_grpo_trainer(r, callbacks=[snap])
    snap.trainer = tr
    assert tr.vps_table.stats()["observed_frac"] == 0.0  # built from the dataset: nothing observed yet
    monkeypatch.setenv("RLCURATE_TRAIN_DEBUG_DIR", str(dbg / "direct"))
    tr.train(resume_from_checkpoint=str(tmp_path / "direct" / "checkpoint-3"))
    seen = snap.seen
    assert seen["step"] == 3
    cols = ["index", "pass_rate", "tds", "vps", "n_observed", "n_groups", "scored"]
    assert seen["table"].select(cols).equals(pq.read_table(ck / VPS_CKPT_FILE).select(cols))
    assert seen["run_stats"] == saved["run_stats"] and seen["block"] == 1
    assert bytes(seen["pad_gen"].numpy()) == base64.b64decode(saved["pad_generators"][0])
    assert not [e for e in _events(dbg / "direct") if e["event"] == "rescore"]
    assert tr.state.global_step == 4 and tr.run_stats["groups"] == 4 * 2

    # (b) `train grpo` resumed from checkpoint-3: no extra re-score, the whole run's statistics
    monkeypatch.setenv("RLCURATE_TRAIN_DEBUG_DIR", str(dbg / "cli"))
    res = train_grpo(build_grpo_recipe(cpu_grpo_section(tmp_path / "cli", data, **sec), str(tiny_qwen2_dir)))
    assert res.resumed_from and res.steps == 4
    assert not [e for e in _events(dbg / "cli") if e["event"] == "rescore"]
    assert res.extra["rescores"] == 1 and res.extra["groups"] == full.extra["groups"] == 4 * 2
    assert res.extra["pad_total"] == full.extra["pad_total"] == 4 * 8

    # (c) a checkpoint without its VPS table: a warning, not a silent restart from the initial scores
    (tmp_path / "no_table" / "checkpoint-3" / VPS_CKPT_FILE).unlink()
    tr = build_grpo_trainer(build_grpo_recipe(cpu_grpo_section(tmp_path / "no_table", data, **sec),
                                              str(tiny_qwen2_dir)))
    with pytest.warns(UserWarning, match="has no vps_table.parquet"):
        tr.restore_run_state(tmp_path / "no_table" / "checkpoint-3")
    assert tr._last_rescore_block == 1 and torch.equal(
        tr._pad_gen.get_state(), torch.frombuffer(bytearray(base64.b64decode(saved["pad_generators"][0])),
                                                 dtype=torch.uint8))


def _events(d: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(d.glob("rank*.jsonl")) for line in f.read_text().splitlines() if line]
