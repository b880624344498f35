#!/usr/bin/env python
"""Dynamic sampling (issue 16): how much learning signal each arm gets per generated rollout.  A real measurement.

Real SmolLM2-135M-Instruct GRPO on CPU (``training.grpo.train_grpo``), four arms on the same problems with the
same seeds and the same number of optimizer steps:

- **uniform**: TRL's ``RepeatSampler`` (VAS off);
- **vas**: VAS with ``lambda`` (online Beta posterior, ``vps_from: posterior``, initial posterior from the pool's
  scores);
- **vas+skip**: + skip prompts whose posterior predicts a zero-variance group with probability >= ``q``
  (exploration floor ``floor``);
- **vas+skip+refill**: + drop zero-variance groups and refill under a rollout budget.

Problems: the rollout pool's generator (``bench/make_rollout_pool.py``, imported, same seed and mix: the same 300
problems, so the same ``problem_id`` as the pool's ``curate score`` output) and its prompt (the
``answer_is_prefix`` template: the question, then 'Finish with "The answer is" followed by the number.');
``--problems`` of them are sampled (seeded).  Initial VPS / posterior: the pool's ``scores.parquet`` (32 samples
per problem at T = 0.7: ``Beta(1 + n_correct, 1 + n - n_correct)``), when present.  Graded by the project's
``accuracy`` reward with the default (strict) extraction rules, as the pool was.

Printed per arm: groups generated, rollouts generated, effective (non-zero-variance) groups trained on,
**effective groups per 1,000 generated rollouts** (and, over the same generated prompts, what the pool's 32-sample
pass rates predict: ``1000 * sum_g (1 - p^G - (1 - p)^G) / rollouts`` - the same quantity without this run's
sampling noise), **wall time per effective group** (TRL's ``train_runtime`` / effective groups) and the **mean
reward** of the last optimizer step and over the run (training reward: it depends on which prompts an arm
draws, so it is not a held-out score).  Ratios are against the uniform arm of the same run.

``--posterior-prior eb`` fits the online posterior's base prior to the pool's counts (``vas.posterior_prior``,
:mod:`training.vps`); the last line then compares both base priors' predicted zero-variance fraction with what
the pool itself shows (first 16 samples as the scores, the next G as a fresh group).  ``--uniform-from OUT``
reuses the uniform arm of an earlier run with the same seed and problem settings (it reads no VAS setting).

Only the top transformer block trains (``bench/vas_effect.py``'s ``top_block_only``: the 135M backward pass is what
makes CPU steps slow), learning rate 1e-6: the policy barely moves, so the comparison isolates the sampling.

    .venv/bin/python bench/dynamic_sampling.py [--seed 2] [--posterior-prior eb] [--out runs/dynamic_sampling]

The defaults are the README's measured setting: 20 steps x 3 prompts x G = 4, 48-token completions (the pool's),
lambda 0.5, q 0.6, floor 0.1, normalised OVS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import make_rollout_pool as pool  # noqa: E402  (the shared problem generator)

POOL_SCORES = HERE.parent / "runs" / "rollout_pool" / "score" / "scores.parquet"  # bench/make_rollout_pool.py's output
INSTRUCTION = '\nFinish with "The answer is" followed by the number.'  # make_rollout_pool's answer_is_prefix
ARMS = ("uniform", "vas", "vas+skip", "vas+skip+refill")


def make_rows(count: int, seed: int, gsm8k: Path) -> list[dict]:
    """``count`` of the pool's 300 problems (seeded sample), as RL rows with the pool's ``problem_id``."""
    from curation.ingest.sources import stable_id

    problems = pool.make_problems(300, 0, pool.parse_mix("arith=0.6,word=0.33,gsm8k=0.07"), gsm8k)
    picked = random.Random(seed).sample(problems, count)
    return [{"problem_id": stable_id("rollout_pool", r["question"], r["answer"], []),
             "prompt": [{"role": "user", "content": r["question"] + INSTRUCTION}], "answer": r["answer"],
             "options": None, "family": r["family"], "difficulty": r["difficulty"]} for r in picked]


def arm_section(arm: str, out: Path, data: Path, scores: Path | None, a: argparse.Namespace) -> dict:
    sec = {
        "output_dir": str(out), "num_generations": a.G, "per_device_train_batch_size": a.G * a.prompts_per_step,
        "gradient_accumulation_steps": 1, "max_completion_length": a.max_completion_length, "max_steps": a.steps,
        "learning_rate": 1.0e-6, "beta": 0.0, "temperature": 0.7, "logging_steps": 1, "save_strategy": "no",
        "report_to": "none", "gradient_checkpointing": False, "bf16": False, "use_cpu": True, "seed": a.seed,
        "disable_tqdm": True, "data": {"train": str(data)}, "rewards": {"accuracy": 1.0},
    }
    if arm == "uniform":
        sec["vas"] = {"enabled": False}
        return sec
    sec["vas"] = {"enabled": True, "lambda": a.lam, "refresh": "online", "vps_from": "posterior",
                  "posterior_decay": a.decay, "normalize_ovs": a.normalize_ovs,
                  "posterior_prior": a.posterior_prior,
                  **({"scores": str(scores)} if scores else {})}
    sec["dynamic"] = {"skip": {"enabled": "skip" in arm, "q": a.q, "floor": a.floor},
                      "refill": {"enabled": "refill" in arm, "max_rounds": a.max_rounds,
                                 "budget_rollouts": a.budget or None}}
    return sec


def generated_prompts(debug_dir: Path, G: int) -> list[str | int]:
    """Dataset indices of every generated group (all rounds), from the trainer's ``batch`` debug events."""
    keys: list[int] = []
    for f in sorted(debug_dir.glob("rank*.jsonl")):
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if e["event"] == "batch":
                keys += e["local_keys"][::G]
    return keys


def run_arm(arm: str, model: str, rows: list[dict], data: Path, scores: Path | None, out: Path,
            a: argparse.Namespace, pool_p: dict[str, float]) -> dict:
    from transformers import TrainerCallback
    from vas_effect import top_block_only

    from training.config import build_grpo_recipe
    from training.grpo import train_grpo

    class Logs(TrainerCallback):
        records: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kw):
            self.records.append(dict(logs or {}))

    logs = Logs()
    logs.records = []
    dbg = out / "debug"
    if dbg.exists():
        import shutil

        shutil.rmtree(dbg)
    os.environ["RLCURATE_TRAIN_DEBUG_DIR"] = str(dbg)
    try:
        t0 = time.perf_counter()
        res = train_grpo(build_grpo_recipe(arm_section(arm, out / "train", data, scores, a), model), resume=False,
                         callbacks=[top_block_only(), logs], report=lambda s: None)
        wall = time.perf_counter() - t0
    finally:
        os.environ.pop("RLCURATE_TRAIN_DEBUG_DIR", None)
    ex = res.extra
    runtime = next((h["train_runtime"] for h in reversed(logs.records) if "train_runtime" in h), wall)
    rewards = [h["reward"] for h in logs.records if "reward" in h]
    G = a.G
    gen = generated_prompts(dbg, G)
    expect = sum(1 - pool_p[rows[i]["problem_id"]] ** G - (1 - pool_p[rows[i]["problem_id"]]) ** G
                 for i in gen if rows[i]["problem_id"] in pool_p)
    rollouts = ex["rollouts"]
    eff = ex["effective_groups"]
    return {
        "arm": arm, "steps": res.steps, "groups": ex["groups_generated"], "rollouts": rollouts,
        "effective_groups": eff, "skipped": ex["groups_skipped"], "explored": ex["groups_explored"],
        "dropped": ex["groups_dropped"], "refilled": ex["groups_refilled"], "fillers": ex["filler_rows"],
        "unused_rows": ex["unused_rows"],
        "eff_per_1k": 1000 * eff / rollouts if rollouts else float("nan"),
        "expected_eff_per_1k": 1000 * expect / rollouts if rollouts and pool_p else float("nan"),
        "train_runtime_s": runtime, "s_per_eff_group": runtime / eff if eff else float("inf"),
        "reward_last": rewards[-1] if rewards else float("nan"),
        "reward_mean": sum(rewards) / len(rewards) if rewards else float("nan"),
        "calib_pred": ex["calib_pred_zero_var"] / ex["calib_groups"] if ex["calib_groups"] else float("nan"),
        "calib_obs": ex["calib_obs_zero_var"] / ex["calib_groups"] if ex["calib_groups"] else float("nan"),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/dynamic_sampling")
    ap.add_argument("--model", help="checkpoint dir (default: SmolLM2-135M-Instruct via ensure_smollm2())")
    ap.add_argument("--scores", default=str(POOL_SCORES), help="the pool's scores.parquet (initial posterior; "
                                                              "default: what bench/make_rollout_pool.py writes)")
    ap.add_argument("--gsm8k", default=str(HERE.parent.parent / "shared" / "data" / "gsm8k" / "train.jsonl"))
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts-per-step", type=int, default=3)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--max-completion-length", type=int, default=48, help="48: the pool's completion length")
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--decay", type=float, default=0.95, help="vas.posterior_decay")
    ap.add_argument("--normalize-ovs", action=argparse.BooleanOptionalAction, default=True,
                    help="vas.normalize_ovs: VPS = alpha * 4 E[p(1-p)] + beta * TDS (a deviation from MMR1; --no-normalize-ovs: MMR1's raw OVS)")
    ap.add_argument("--posterior-prior", choices=("fixed", "eb"), default="fixed",
                    help="vas.posterior_prior: the online posterior's base prior (eb: fitted to --scores' counts)")
    ap.add_argument("--q", type=float, default=0.6, help="dynamic.skip.q (the recipe default is 0.8)")
    ap.add_argument("--floor", type=float, default=0.1)
    ap.add_argument("--budget", type=int, default=0, help="refill budget in rollouts (0: 2 x generation batch)")
    ap.add_argument("--max-rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reprint", action="store_true", help="print the table of --out's earlier run again (no training)")
    ap.add_argument("--uniform-from", type=Path,
                    help="take the uniform arm from this earlier --out (same seed, problems, steps, G, length: "
                         "checked) instead of training it again; the uniform arm does not read the VAS settings")
    a = ap.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.core.io import write_parquet_atomic

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = a.model
    if not model:
        from curation.core.models import ensure_smollm2

        model = str(ensure_smollm2())
    rows = make_rows(a.problems, a.seed, Path(a.gsm8k))
    data = write_parquet_atomic(pa.Table.from_pylist([{k: r[k] for k in ("problem_id", "prompt", "answer", "options")}
                                                      for r in rows]), out / "problems.parquet")
    scores = Path(a.scores) if a.scores and Path(a.scores).is_file() else None
    if a.scores and scores is None:
        print(f"no pool scores at {a.scores} (run bench/make_rollout_pool.py first): VAS starts from the uniform "
              "prior and pool-exp is not computed", flush=True)
    pool_p: dict[str, float] = {}
    if scores:
        want = {r["problem_id"] for r in rows}
        pool_p = {r["problem_id"]: r["pass_rate"] for r in pq.read_table(scores).to_pylist() if r["problem_id"] in want}
    report = {"model": model, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}, "scores": str(scores) if scores else None,
              "arms": []}
    if a.reprint:  # the table of an earlier run of the same settings, without training again
        report = json.loads((out / "dynamic_sampling.json").read_text())
    else:
        if a.uniform_from:
            if "uniform" in a.arms.split(","):
                raise SystemExit("--uniform-from: leave 'uniform' out of --arms")
            report["arms"].append(uniform_arm_from(a.uniform_from, a))
        for arm in a.arms.split(","):
            print(f"[{time.strftime('%H:%M:%S')}] {arm} ...", flush=True)
            report["arms"].append(run_arm(arm, model, rows, data, scores, out / arm.replace("+", "_"), a, pool_p))
            (out / "dynamic_sampling.json").write_text(json.dumps(report, indent=2, default=float))
    base = next((r for r in report["arms"] if r["arm"] == "uniform"), report["arms"][0])
    print(f"\nSmolLM2-135M GRPO on CPU: {len(rows)} pool problems, {a.steps} optimizer steps x {a.prompts_per_step} "
          f"prompts x G={a.G}, max {a.max_completion_length} tokens, seed {a.seed}; initial posterior "
          f"{'from ' + str(scores) if scores else 'the uniform prior (no pool scores)'}, base prior "
          f"{a.posterior_prior}; skip q = {a.q}, floor {a.floor}, lambda {a.lam}; VPS = 0.8 * "
          f"{'4 E[p(1-p)] (normalised OVS)' if a.normalize_ovs else 'E[p(1-p)]'} + 0.2 * TDS")
    hdr = (f"{'arm':17s} {'groups':>6s} {'rollouts':>8s} {'eff':>5s} {'eff/1k':>7s} {'x unif':>6s} {'pool-exp/1k':>11s} "
           f"{'s/eff':>7s} {'x unif':>6s} {'reward last':>11s} {'mean':>5s} {'skip':>4s} {'drop':>4s} {'refill':>6s}")
    print(hdr)
    for r in report["arms"]:
        ratio = r["eff_per_1k"] / base["eff_per_1k"] if base["eff_per_1k"] else float("nan")
        tratio = r["s_per_eff_group"] / base["s_per_eff_group"] if base["s_per_eff_group"] not in (0, float("inf")) \
            else float("nan")
        print(f"{r['arm']:17s} {r['groups']:6d} {r['rollouts']:8d} {r['effective_groups']:5.1f} {r['eff_per_1k']:7.1f} "
              f"{ratio:6.2f} {r['expected_eff_per_1k']:11.1f} {r['s_per_eff_group']:7.1f} {tratio:6.2f} "
              f"{r['reward_last']:11.3f} {r['reward_mean']:5.3f} {r['skipped']:4d} {r['dropped']:4d} "
              f"{r['refilled']:6d}")
        r["eff_ratio_vs_uniform"], r["time_ratio_vs_uniform"] = ratio, tratio
    if pool_p:
        # what uniform sampling yields in expectation over the whole problem set (no sampling noise from which
        # prompts the uniform arm happened to draw): 1000 / G * mean_i (1 - p_i^G - (1 - p_i)^G)
        ps = [pool_p[r["problem_id"]] for r in rows if r["problem_id"] in pool_p]
        u = 1000 / a.G * sum(1 - p ** a.G - (1 - p) ** a.G for p in ps) / len(ps)
        report["uniform_expected_eff_per_1k"] = u
        print(f"uniform in expectation over the {len(ps)} problems (pool pass rates): {u:.1f} effective groups per 1k "
              "rollouts; pool-exp / that: " + ", ".join(f"{r['arm']} {r['expected_eff_per_1k'] / u:.2f}"
                                                        for r in report["arms"])
              + "; measured eff/1k / that: " + ", ".join(f"{r['arm']} {r['eff_per_1k'] / u:.2f}"
                                                         for r in report["arms"]))
    cal = [r for r in report["arms"] if r["calib_pred"] == r["calib_pred"]]
    if cal:
        print("posterior calibration (predicted vs observed zero-variance fraction of generated groups): " +
              ", ".join(f"{r['arm']} {r['calib_pred']:.2f} vs {r['calib_obs']:.2f}" for r in cal))
    if scores and (scores.parent / "rollouts.parquet").is_file():
        report["pool_calibration"] = pool_calibration(scores.parent / "rollouts.parquet", a.G)
        print("base prior on the pool (all its problems; the first 16 samples as the scores, the next "
              f"{a.G} as a fresh group): predicted zero-variance fraction " + ", ".join(
                  f"{k} {v:.3f}" for k, v in report["pool_calibration"].items()))
    (out / "dynamic_sampling.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def uniform_arm_from(folder: Path, a: argparse.Namespace) -> dict:
    """The uniform arm of an earlier run with the same seed, problems, steps, prompts per step, G and completion
    length (its training reads nothing else of ours: VAS and dynamic sampling are off)."""
    old = json.loads((folder / "dynamic_sampling.json").read_text())
    same = ("seed", "problems", "steps", "prompts_per_step", "G", "max_completion_length", "gsm8k", "model")
    diff = [k for k in same if old["settings"].get(k) != vars(a).get(k)]
    if diff:
        raise SystemExit(f"--uniform-from {folder}: different {', '.join(diff)}")
    arm = next((r for r in old["arms"] if r["arm"] == "uniform"), None)
    if arm is None:
        raise SystemExit(f"--uniform-from {folder}: no uniform arm there")
    return {**arm, "from": str(folder)}


def pool_calibration(rollouts: Path, G: int, n_fit: int = 16) -> dict[str, float]:
    """How well each base prior predicts zero-variance groups on the pool itself: the VPS table built from
    every problem's first ``n_fit`` samples (``fixed`` and ``eb`` base priors) predicts P(a group of ``G`` has
    zero variance); ``observed`` is what samples ``n_fit .. n_fit + G - 1`` did."""
    import numpy as np
    import polars as pl

    from training.vps import VPSConfig, VPSTable

    t = pl.read_parquet(rollouts, columns=["problem_id", "sample", "correct"])
    fit = t.filter(pl.col("sample") < n_fit).group_by("problem_id").agg(
        n=pl.len(), n_correct=pl.col("correct").cast(pl.Int64).sum())
    new = t.filter((pl.col("sample") >= n_fit) & (pl.col("sample") < n_fit + G)).group_by("problem_id").agg(
        g=pl.len(), k=pl.col("correct").cast(pl.Int64).sum())
    j = fit.join(new.filter(pl.col("g") == G), on="problem_id").sort("problem_id").with_columns(
        (pl.col("n_correct") / pl.col("n")).alias("pass_rate"))
    rows = [{"problem_id": pid} for pid in j["problem_id"]]
    out = {prior: float(np.mean(VPSTable.from_dataset(rows, config=VPSConfig(posterior_prior=prior),
                                                      scores=j.to_dicts()).zero_variance_prob_by_index(G)))
           for prior in ("fixed", "eb")}
    out["observed"] = float(((j["k"] == 0) | (j["k"] == G)).mean())
    return out


if __name__ == "__main__":
    main()
