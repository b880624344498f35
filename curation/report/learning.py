"""The learning section of ``curate report``: held-out accuracy before and after each GRPO arm.

Inputs (the demo's layout, ``pipelines/demo.yaml``): ``learn/eval_base/scores.parquet`` (the starting model),
``learn/eval_<arm>/scores.parquet`` (each arm's final checkpoint) - ``curate score`` runs over the same held-out
problems, with the same prompt template, temperature, seeds and extraction rules - and each arm's
``learn/<arm>/final/{result.json, trainer_state.json}`` (steps, the reward per step).

Accuracy of a model = the mean over held-out problems of its pass rate (each problem weighs the same,
whatever its number of samples).  The difference after - before is *paired*: both evaluations cover the same
problems, so the interval is a **paired bootstrap over problems**: resample the problems with replacement
``n_boot`` times (seeded), take the mean per-problem difference each time, and report the 2.5 / 97.5 %
percentiles (95 % interval).  It covers the choice of problems and, through each problem's pass rate, the
sampling noise of its samples; it does not cover the randomness of training itself (one run per arm).  A
difference whose interval contains 0 is reported as *within noise*.  VAS - uniform compares the two arms'
after-accuracies the same way (paired over the same problems).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ARMS = ("vas", "uniform")
N_BOOT = 10_000
LEVEL = 0.95


def paired_bootstrap(before: np.ndarray, after: np.ndarray, *, n_boot: int = N_BOOT, level: float = LEVEL,
                     seed: int = 0) -> dict[str, float]:
    """Mean of ``after - before`` over items and its percentile interval from ``n_boot`` resamples of the
    items (pairs kept together)."""
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if d.size == 0:
        raise ValueError("no paired items")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "within_noise": bool(lo <= 0.0 <= hi)}


def _accuracy(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path, columns=["problem_id", "pass_rate", "n"])


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def reward_history(arm_dir: Path) -> list[tuple[float, float]]:
    """(step, mean reward) of each logged step: ``final/trainer_state.json``, else the last checkpoint's."""
    files = [arm_dir / "final" / "trainer_state.json", *sorted(arm_dir.glob("checkpoint-*/trainer_state.json"))]
    best: dict | None = None
    for f in files:
        st = _read_json(f)
        if st and (best is None or st.get("global_step", -1) > best.get("global_step", -1)):
            best = st
    return [(h["step"], h["reward"]) for h in (best or {}).get("log_history", []) if "reward" in h and "step" in h]


def learning_summary(learn_dir: str | Path) -> dict[str, Any] | None:
    """Before/after accuracies per arm with paired-bootstrap intervals, or ``None`` without ``eval_base``."""
    learn_dir = Path(learn_dir)
    base_path = learn_dir / "eval_base" / "scores.parquet"
    if not base_path.exists():
        return None
    base = _accuracy(base_path)
    out: dict[str, Any] = {"heldout_problems": base.height, "samples_per_problem": sorted(set(base["n"].to_list())),
                           "interval": f"paired bootstrap over held-out problems, {N_BOOT} resamples, "
                                       f"{LEVEL:.0%} percentile interval",
                           "before": float(base["pass_rate"].mean()), "arms": {}}
    after_by_arm = {}
    for arm in ARMS:
        p = learn_dir / f"eval_{arm}" / "scores.parquet"
        if not p.exists():
            continue
        j = base.join(_accuracy(p), on="problem_id", how="inner", suffix="_after")
        res = _read_json(learn_dir / arm / "final" / "result.json") or {}
        rewards = reward_history(learn_dir / arm)
        out["arms"][arm] = {
            "problems": j.height,
            "before": float(j["pass_rate"].mean()),
            "after": float(j["pass_rate_after"].mean()),
            **paired_bootstrap(j["pass_rate"].to_numpy(), j["pass_rate_after"].to_numpy()),
            "steps": res.get("steps"),
            "train_rows": res.get("train_rows"),
            "zero_variance_frac": res.get("zero_variance_frac"),
            "groups": (res.get("extra") or {}).get("groups"),
            "zero_variance_groups": (res.get("extra") or {}).get("zero_var_groups"),
            "first_reward": rewards[0][1] if rewards else None,
            "mean_reward": float(np.mean([r for _, r in rewards])) if rewards else None,
            "rewards": rewards,
        }
        after_by_arm[arm] = j.select("problem_id", pl.col("pass_rate_after").alias(arm))
    if len(after_by_arm) == 2:
        j = after_by_arm["uniform"].join(after_by_arm["vas"], on="problem_id", how="inner")
        out["vas_minus_uniform"] = {"problems": j.height,
                                    **paired_bootstrap(j["uniform"].to_numpy(), j["vas"].to_numpy())}
    return out


def _verdict(r: dict) -> str:
    ci = f"[{r['lo']:+.3f}, {r['hi']:+.3f}]"
    if r["within_noise"]:
        return f"{r['diff']:+.3f}, 95 % interval {ci}: within noise (the interval contains 0)"
    return f"{r['diff']:+.3f}, 95 % interval {ci}: {'better' if r['diff'] > 0 else 'worse'} beyond noise"


def learning_lines(s: dict[str, Any]) -> list[str]:
    """Markdown lines of the section; every number comes from ``s`` (:func:`learning_summary`)."""
    from curation.core.plots import markdown_table

    rows = [{"arm": arm, "GRPO steps": a["steps"], "held-out accuracy before": f"{a['before']:.3f}",
             "after": f"{a['after']:.3f}", "after - before (95 % interval)": f"{a['diff']:+.3f} [{a['lo']:+.3f}, {a['hi']:+.3f}]",
             "mean train reward": "-" if a["mean_reward"] is None else f"{a['mean_reward']:.3f}",
             "zero-variance groups": "-" if not a.get("groups") else f"{a['zero_variance_groups']}/{a['groups']}"}
            for arm, a in s["arms"].items()]
    md = [f"Held-out set: {s['heldout_problems']} problems never trained on, {s['samples_per_problem']} samples each; "
          f"accuracy = mean pass rate over the problems. Interval: {s['interval']}.", "", markdown_table(rows), ""]
    for arm, a in s["arms"].items():
        md.append(f"- {arm}: after - before {_verdict(a)}.")
    if "vas_minus_uniform" in s:
        md.append(f"- VAS - uniform (after training, same problems): {_verdict(s['vas_minus_uniform'])}.")
    md.append("")
    return md


def summary_text(s: dict[str, Any]) -> str:
    """One line per arm for the demo's closing summary (scripts/demo.sh prints it)."""
    lines = []
    for arm, a in s["arms"].items():
        lines.append(f"{arm:8s} held-out accuracy {a['before']:.3f} -> {a['after']:.3f} after {a['steps']} GRPO steps: "
                     + _verdict(a))
    if "vas_minus_uniform" in s:
        lines.append(f"VAS - uniform after training: {_verdict(s['vas_minus_uniform'])}")
    return "\n".join(lines)
