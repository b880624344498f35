"""Does Variance-Aware Sampling reduce the zero-variance groups GRPO trains on?  A real measurement.

Same data, same seed, same real model (SmolLM2-135M-Instruct, CPU), two real GRPO runs of
``training.grpo.VASGRPOTrainer``:

- **uniform**: TRL's own ``RepeatSampler`` (VAS off);
- **VAS**: ``VASSampler`` with ``lambda`` of each batch drawn by VPS; initial VPS from a scoring pass with the
  starting policy (``vas.score_at_start``: every prompt x ``num_generations`` rollouts), refreshed online
  from the run's own rollouts (EMA).

Task: additions of 1-, 2- and 3-digit numbers (generated, seeded), a spread of difficulty for this small model
(it gets some 1-digit sums right, fewer 2-digit ones, almost no 3-digit ones).  The prompt is plain text
(TRL's standard format): SmolLM2's chat template for ``What is a + b?`` followed by the assistant's
``a + b =`` so the completion is the sum; completions are at most ``max_completion_length`` tokens and graded
by the project's ``accuracy`` reward with the ``last_number`` extraction rule.

Metric: over all generation batches of the run, the fraction of prompt groups whose ``num_generations``
accuracy rewards are all equal (all right or all wrong) - GRPO advantages are then all zero and the group
contributes no gradient.  Both numbers are printed; the VAS run also reports how many prompts it drew by
VPS.  The learning rate is small (1e-6) and only the top transformer block is trained (the backward pass of
the full 135M model is what makes CPU steps slow), so the policy - hence each prompt's pass rate - barely
moves and the comparison isolates the sampler.

    .venv/bin/python bench/vas_effect.py [--steps 12] [--lam 1.0] [--out runs/vas_effect]
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def make_rows(n_per_digits: tuple[int, ...] = (6, 6, 4), seed: int = 0) -> list[dict]:
    """``n_per_digits[k]`` problems whose operands have ``k + 1`` digits; plain-text prompts ending in
    ``a + b =`` (SmolLM2's ChatML template written out)."""
    rng = random.Random(seed)
    rows = []
    for k, n in enumerate(n_per_digits):
        digits = k + 1
        lo, hi = (1 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
        for _ in range(n):
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is {a} + {b}?<|im_end|>\n"
                      f"<|im_start|>assistant\n{a} + {b} =")
            rows.append({"problem_id": f"add-{digits}d-{a}-{b}", "prompt": prompt, "answer": str(a + b),
                         "digits": digits})
    return rows


def top_block_only():
    """TrainerCallback that freezes everything but the last transformer block and the final norm before the
    first step (embeddings - tied to the LM head - included).  The backward pass then stops at the top block:
    ~5x cheaper on CPU.  The measured quantity (which prompts are sampled, and their groups' reward variance)
    does not depend on which weights move; at lr 1e-6 the policy barely moves either way."""
    from transformers import TrainerCallback

    class _TopBlockOnly(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            for p in model.parameters():
                p.requires_grad_(False)
            for p in model.model.layers[-1].parameters():
                p.requires_grad_(True)
            for p in model.model.norm.parameters():
                p.requires_grad_(True)

    return _TopBlockOnly()


def run_one(model: str, data: Path, out: Path, *, vas: bool, steps: int, lam: float, seed: int,
            num_generations: int, prompts_per_step: int, max_completion_length: int):
    from training.config import build_grpo_recipe
    from training.grpo import train_grpo

    sec = {
        "output_dir": str(out), "num_generations": num_generations,
        "per_device_train_batch_size": num_generations * prompts_per_step, "gradient_accumulation_steps": 1,
        "max_completion_length": max_completion_length, "max_steps": steps, "learning_rate": 1.0e-6,
        "beta": 0.0, "temperature": 1.0, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "gradient_checkpointing": False, "bf16": False, "use_cpu": True, "seed": seed, "disable_tqdm": True,
        "data": {"train": str(data)},
        "rewards": {"accuracy": {"weight": 1.0, "rules": ["last_number"]}},
        "vas": ({"enabled": True, "lambda": lam, "score_at_start": True, "refresh": "online", "momentum": 0.5}
                if vas else {"enabled": False}),
    }
    notes: list[str] = []
    res = train_grpo(build_grpo_recipe(sec, model), resume=False, report=notes.append, callbacks=[top_block_only()])
    return res, notes


def run_experiment(out_dir: str | Path, *, steps: int = 12, lam: float = 1.0, seed: int = 0,
                   n_per_digits: tuple[int, ...] = (6, 6, 4), num_generations: int = 4, prompts_per_step: int = 2,
                   max_completion_length: int = 5, model: str | None = None) -> dict:
    """Both runs; returns the zero-variance fractions and run details."""
    import pyarrow as pa

    from curation.core.io import write_parquet_atomic
    from curation.core.models import ensure_smollm2

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model or str(ensure_smollm2())
    rows = make_rows(n_per_digits, seed)
    data = write_parquet_atomic(pa.Table.from_pylist(rows), out_dir / "additions.parquet")
    report: dict = {"model": model, "steps": steps, "lambda": lam, "seed": seed, "prompts": len(rows),
                    "num_generations": num_generations, "prompts_per_step": prompts_per_step}
    for name, vas in (("uniform", False), ("vas", True)):
        t0 = time.perf_counter()
        res, notes = run_one(model, data, out_dir / name, vas=vas, steps=steps, lam=lam, seed=seed,
                             num_generations=num_generations, prompts_per_step=prompts_per_step,
                             max_completion_length=max_completion_length)
        ex = res.extra
        report[name] = {
            "zero_variance_frac": ex["zero_variance_frac_accuracy"],
            "groups": ex["acc_groups"], "zero_variance_groups": ex["acc_zero_var_groups"],
            "n_vas": ex["n_vas"], "n_uniform": ex["n_uniform"], "final_reward": res.final_reward,
            "seconds": round(time.perf_counter() - t0, 1), "notes": notes,
        }
        if vas:
            import pyarrow.parquet as pq

            tbl = pq.read_table(Path(res.output_dir) / "vps_final.parquet").to_pylist()
            by_digits: dict[int, list[float]] = {}
            for row, r in zip(rows, tbl):
                by_digits.setdefault(row["digits"], []).append(r["pass_rate"])
            report["pass_rate_by_digits"] = {d: round(sum(v) / len(v), 3) for d, v in sorted(by_digits.items())}
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/vas_effect")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rep = run_experiment(args.out, steps=args.steps, lam=args.lam, seed=args.seed)
    print(f"SmolLM2-135M, {rep['prompts']} addition prompts, {rep['steps']} GRPO steps x "
          f"{rep['prompts_per_step']} prompts x {rep['num_generations']} rollouts, seed {rep['seed']}")
    for name in ("uniform", "vas"):
        r = rep[name]
        print(f"  {name:8s} zero-variance groups {r['zero_variance_groups']:3d}/{r['groups']:3d} = "
              f"{r['zero_variance_frac']:.3f}   (drawn by VPS: {r['n_vas']}, uniformly: {r['n_uniform']}; "
              f"{r['seconds']:.0f}s)")
    print(f"  pass rate by operand digits (VAS table at the end): {rep['pass_rate_by_digits']}")
    Path(args.out, "vas_effect.json").write_text(json.dumps(rep, indent=2))


if __name__ == "__main__":
    main()
