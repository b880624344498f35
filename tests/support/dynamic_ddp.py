"""Driver for tests/test_dynamic_ddp.py, run under ``accelerate launch`` with two CPU processes (gloo).

``python -m accelerate.commands.launch --config_file pipelines/accelerate/ddp_cpu.yaml --num_processes 2
tests/support/dynamic_ddp.py MODEL_DIR OUT_DIR``

VASGRPOTrainer on 12 GSM8K prompts with VAS (lambda 0.5, online posterior), the skip rule and refill under a
budget.  The reward is a function of the prompt index only (prompts 0, 3, 6, 9: every rollout 0, zero
variance; the others alternate 0 / 1), so some ranks' rows need refilling and others' do not.  Every rank
appends debug events (``RLCURATE_TRAIN_DEBUG_DIR``): the trainer's own (sampler chunks, batches, refill rounds)
plus, at every optimizer step, the shapes of its buffered slices, and at the end its VPS values and a checksum
of its weights."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

G = 4


def parity_reward(completions, vas_index, **kwargs):
    return [0.0 if v % 3 == 0 else float(i % 2) for i, v in enumerate(vas_index)]


def main(model_dir: str, out: str) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from training.config import DynamicSpec, RefillSpec, SkipSpec, VASSpec
    from training.grpo import VASGRPOTrainer
    from training.utils import debug_event, model_and_processor
    from training.vps import VPSConfig, VPSTable

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k" / "train.jsonl"
    rows = []
    with open(data) as f:
        for k, line in enumerate(f):
            if k >= 12:
                break
            rows.append({"prompt": [{"role": "user", "content": json.loads(line)["question"]}], "vas_index": k,
                         "problem_id": f"q{k}"})
    ds = Dataset.from_list(rows)
    # half the prompts start as certain zero-variance (0 of 64): the skip rule replaces them unless explored
    sure = {1, 2, 4, 5, 7, 8}
    table = VPSTable.from_dataset(
        [{"problem_id": r["problem_id"], "pass_rate": 0.0 if r["vas_index"] in sure else None,
          "tds": 0.5 if r["vas_index"] in sure else None, "post_a": 1.0 if r["vas_index"] in sure else None,
          "post_b": 65.0 if r["vas_index"] in sure else None} for r in rows],
        config=VPSConfig(vps_from="posterior", posterior_decay=0.9))

    class Shapes(TrainerCallback):
        trainer = None

        def on_pre_optimizer_step(self, args, state, control, **kw):
            t = self.trainer
            debug_event(t.accelerator.process_index, "slices", step=int(state.global_step),
                        rows=[int(s["prompt_ids"].shape[0]) for s in t._buffered_inputs],
                        kept=[int(s["pad_kept"].sum()) for s in t._buffered_inputs],
                        widths=[int(s["completion_ids"].shape[1]) for s in t._buffered_inputs])

    shapes = Shapes()
    args = GRPOConfig(output_dir=out, num_generations=G, per_device_train_batch_size=3, gradient_accumulation_steps=2,
                      max_completion_length=8, max_steps=3, learning_rate=1e-3, beta=0.0, temperature=1.0,
                      bf16=False, use_cpu=True, seed=0, report_to="none", save_strategy="no", logging_steps=1,
                      disable_tqdm=True, gradient_checkpointing=False)
    tr = VASGRPOTrainer(
        model=model_dir, reward_funcs=[parity_reward], args=args, train_dataset=ds,
        processing_class=model_and_processor(model_dir, "left")[0], callbacks=[shapes], vps_table=table,
        vas=VASSpec(enabled=True, lambda_=0.5, refresh="online", vps_from="posterior", posterior_decay=0.9),
        dynamic=DynamicSpec(skip=SkipSpec(enabled=True, q=0.8, floor=0.3),
                            refill=RefillSpec(enabled=True, budget_rollouts=48, max_rounds=3)),
        accuracy_reward="parity_reward")
    shapes.trainer = tr
    tr.train()
    rank = tr.accelerator.process_index
    checksum = float(sum(p.detach().double().sum() for p in tr.model.parameters()))
    debug_event(rank, "final", vps=table.vps_by_index().tolist(), checksum=checksum, run_stats=tr.run_stats,
                world_size=tr.accelerator.num_processes)
    del torch


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
